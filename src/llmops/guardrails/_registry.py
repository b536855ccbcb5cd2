"""The guardrail policy registry: immutable numbered versions of policies, labels per environment, and their history.

A policy's ``name`` is its registry name. Each version keeps the YAML exactly as it was pushed (comments included);
two pushes whose validated policies are equal are the same version, whatever their formatting.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from llmops.guardrails._policy import GuardrailPolicy, PolicyError
from llmops.guardrails._tables import PolicyHistoryRow, PolicyLabelRow, PolicyRow, PolicyVersionRow
from llmops.prompts._cache import StaleCache
from llmops.store import AuditHook, Store

__all__ = ["PolicyChange", "PolicyNotFoundError", "PolicyRegistry", "PolicyVersion"]

logger = logging.getLogger("llmops.guardrails")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class PolicyNotFoundError(LookupError):
    """No such policy, version, label or environment."""


@dataclass(frozen=True)
class PolicyVersion:
    name: str
    version: int
    policy: GuardrailPolicy
    source: str  # the YAML as it was given
    content_hash: str
    author: str
    message: str
    created_at: datetime


@dataclass(frozen=True)
class PolicyChange:
    """One entry of a policy's history: a new version (``create``), a label ``move`` or a ``rollback``."""

    id: int
    kind: str
    environment: str | None
    label: str | None
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    at: datetime


def _check_name(kind: str, value: str) -> str:
    """Policy names and labels are also URL segments and file names: keep them plain."""
    if not _NAME.match(value):
        raise PolicyError(
            f"{kind} {value!r} is not valid: use letters, digits, '.', '_' and '-' (starting with a letter or digit)"
        )
    return value


def _content_hash(policy: GuardrailPolicy) -> str:
    """The hash of the validated policy (defaults filled in), so formatting, comments and key order change nothing."""
    normalised = json.dumps(policy.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(normalised.encode()).hexdigest()


def _to_yaml(policy: GuardrailPolicy) -> str:
    """A policy written out as YAML, leaving out what its defaults already say."""
    data = policy.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


def _version_from_row(row: PolicyVersionRow) -> PolicyVersion:
    try:
        policy = GuardrailPolicy.from_yaml(row.source)
    except PolicyError as exc:  # stored under older rules that have since become stricter
        raise PolicyError(f"guardrail policy {row.name} v{row.version} no longer validates: {exc}") from exc
    return PolicyVersion(
        name=row.name,
        version=row.version,
        policy=policy,
        source=row.source,
        content_hash=row.content_hash,
        author=row.author,
        message=row.message,
        created_at=row.created_at,
    )


class PolicyRegistry:
    """Stores guardrail policy versions and the labels that pick one per environment.

    >>> v = registry.create(Path("support.yaml").read_text(), author="ana")              # doctest: +SKIP
    >>> registry.move_label("support", "production", v.version, environment="prod", by="ana")  # doctest: +SKIP
    >>> registry.get("support", environment="prod").policy.input                        # doctest: +SKIP
    [RailSpec(rail='size', ...), ...]
    >>> registry.rollback("support", "production", environment="prod", by="ops")         # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        *,
        environments: Iterable[str],
        default_environment: str,
        cache_ttl: float,
        audit: AuditHook | None = None,
    ) -> None:
        """``audit`` is told of every label move and rollback (the platform passes the governance audit log)."""
        self._store = store
        self._audit = audit
        self.environments = tuple(_check_name("environment", e) for e in environments)
        if default_environment not in self.environments:
            raise ValueError(f"default environment {default_environment!r} is not one of {self.environments}")
        self.default_environment = default_environment
        self._labels_cache: StaleCache[PolicyVersion] = StaleCache(
            cache_ttl, (OperationalError, OSError), what="guardrail policy", log=logger
        )
        self._versions_cache: dict[tuple[str, int], PolicyVersion] = {}  # versions never change: no expiry

    # ---- versions ---------------------------------------------------------------------------------------------

    def create(self, policy: GuardrailPolicy | str, *, author: str, message: str = "") -> PolicyVersion:
        """Save a new version of the policy named by its ``name``, or return the newest one if it is the same policy.

        A ``str`` is the policy's YAML, stored as given; an invalid policy raises `PolicyError` and stores nothing.
        """
        if isinstance(policy, str):
            source, parsed = policy, GuardrailPolicy.from_yaml(policy)
        else:
            source, parsed = _to_yaml(policy), policy
        name = _check_name("policy name", parsed.name)
        digest = _content_hash(parsed)
        now = datetime.now(UTC)
        try:
            with self._store.session() as session:
                row = session.get(PolicyRow, name)
                if row is None:
                    session.add(PolicyRow(name=name, description=parsed.description, created_at=now))
                    session.flush()
                latest = self._latest_row(session, name)
                if latest is not None and latest.content_hash == digest:
                    return _version_from_row(latest)
                if row is not None:
                    row.description = parsed.description
                version = PolicyVersionRow(
                    name=name,
                    version=(latest.version + 1) if latest else 1,
                    source=source,
                    content_hash=digest,
                    author=author,
                    message=message,
                    created_at=now,
                )
                session.add(version)
                session.add(_change(name, "create", author, to_version=version.version, reason=message))
                session.flush()
                created = _version_from_row(version)
                before = latest.content_hash if latest is not None else None
        except IntegrityError as exc:  # another writer took the same name or version number
            raise RuntimeError(f"concurrent change to guardrail policy {name!r}; retry") from exc
        if self._audit is not None:
            self._audit(author, "guardrail_policy.version.create", "guardrail_policy_version",
                        f"{name}@{created.version}", before=before, after=digest,
                        details={"message": message} if message else None)  # fmt: skip
        return created

    @staticmethod
    def _latest_row(session: Session, name: str) -> PolicyVersionRow | None:
        return session.scalars(
            select(PolicyVersionRow)
            .where(PolicyVersionRow.name == name)
            .order_by(PolicyVersionRow.version.desc())
            .limit(1)
        ).first()

    def get_version(self, name: str, version: int) -> PolicyVersion:
        cached = self._versions_cache.get((name, version))
        if cached is not None:
            return cached
        with self._store.session() as session:
            row = session.scalars(
                select(PolicyVersionRow).where(PolicyVersionRow.name == name, PolicyVersionRow.version == version)
            ).first()
            if row is None:
                self._require(session, name)
                raise PolicyNotFoundError(f"guardrail policy {name!r} has no version {version}")
            found = _version_from_row(row)
        self._versions_cache[(name, version)] = found
        return found

    def latest(self, name: str) -> PolicyVersion:
        with self._store.session() as session:
            row = self._latest_row(session, name)
            if row is None:
                raise PolicyNotFoundError(f"no guardrail policy named {name!r}")
            return _version_from_row(row)

    def versions(self, name: str) -> list[PolicyVersion]:
        """Every version of the policy, oldest first."""
        with self._store.session() as session:
            rows = session.scalars(
                select(PolicyVersionRow).where(PolicyVersionRow.name == name).order_by(PolicyVersionRow.version)
            ).all()
        if not rows:
            raise PolicyNotFoundError(f"no guardrail policy named {name!r}")
        return [_version_from_row(r) for r in rows]

    def list_policies(self) -> list[dict[str, Any]]:
        """Every policy with its description, newest version number and labels per environment."""
        with self._store.session() as session:
            query = select(PolicyVersionRow.name, func.max(PolicyVersionRow.version)).group_by(PolicyVersionRow.name)
            newest = {name: version for name, version in session.execute(query)}
            policies = session.scalars(select(PolicyRow).order_by(PolicyRow.name)).all()
            pointers = session.scalars(select(PolicyLabelRow)).all()
        labels: dict[str, dict[str, dict[str, int]]] = {}
        for p in pointers:
            labels.setdefault(p.name, {}).setdefault(p.environment, {})[p.label] = p.version
        return [
            {
                "name": p.name,
                "description": p.description,
                "latest_version": newest.get(p.name),
                "labels": labels.get(p.name, {}),
            }
            for p in policies
        ]

    def diff(self, name: str, a: int, b: int) -> str:
        """A unified diff of two versions' YAML, as they were pushed."""
        left, right = self.get_version(name, a), self.get_version(name, b)
        return "".join(
            difflib.unified_diff(
                _lines(left.source), _lines(right.source), fromfile=f"{name} v{a}", tofile=f"{name} v{b}"
            )
        )

    def ensure(self, policy: GuardrailPolicy, *, author: str) -> None:
        """Seed a policy: version 1 if no policy has its name, and label ``production`` on the newest version in
        every environment without one. Idempotent; an existing policy's versions and labels are left as they are."""
        for attempt in range(3):  # replicas starting together race for the same first rows
            try:
                try:
                    version = self.latest(policy.name).version
                except PolicyNotFoundError:
                    version = self.create(policy, author=author, message="seed").version
                for environment in self.environments:
                    if "production" not in self.labels(policy.name, environment):
                        self.move_label(
                            policy.name, "production", version, environment=environment, by=author, reason="seed"
                        )
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    # ---- labels -----------------------------------------------------------------------------------------------

    def _environment(self, environment: str | None) -> str:
        env = environment or self.default_environment
        if env not in self.environments:
            raise PolicyNotFoundError(f"unknown environment {env!r}; environments are {', '.join(self.environments)}")
        return env

    @staticmethod
    def _require(session: Session, name: str) -> None:
        if session.get(PolicyRow, name) is None:
            raise PolicyNotFoundError(f"no guardrail policy named {name!r}")

    def resolve(self, name: str, *, label: str = "production", environment: str | None = None) -> PolicyVersion:
        """The version ``label`` points at in ``environment``, read from the store (no cache)."""
        env = self._environment(environment)
        with self._store.session() as session:
            pointer = session.get(PolicyLabelRow, (name, env, label))
            if pointer is None:
                self._require(session, name)
                raise PolicyNotFoundError(f"guardrail policy {name!r} has no label {label!r} in {env}")
            version = pointer.version
        return self.get_version(name, version)

    def get(self, name: str, *, label: str = "production", environment: str | None = None) -> PolicyVersion:
        """Like `resolve`, cached for ``cache_ttl`` seconds; serves the last good version if the store is down."""
        env = environment or self.default_environment
        return self._labels_cache.get((name, env, label), lambda: self.resolve(name, label=label, environment=env))

    def labels(self, name: str, environment: str | None = None) -> dict[str, int]:
        """Label → version in one environment (the default one if omitted)."""
        env = self._environment(environment)
        with self._store.session() as session:
            self._require(session, name)
            rows = session.scalars(
                select(PolicyLabelRow).where(PolicyLabelRow.name == name, PolicyLabelRow.environment == env)
            )
            return {row.label: row.version for row in rows}

    def move_label(
        self, name: str, label: str, version: int, *, environment: str | None = None, by: str, reason: str = ""
    ) -> None:
        """Point ``label`` at ``version`` in ``environment``. A label already there is left alone (nothing recorded)."""
        env = self._environment(environment)
        _check_name("label", label)
        self.get_version(name, version)
        self._apply_move(name, env, label, version, by=by, reason=reason, kind="move")

    def rollback(self, name: str, label: str, *, environment: str | None = None, by: str, reason: str = "") -> int:
        """Undo the label's last move: put it back on the version it pointed at before. Returns that version.

        Rollbacks stack like undo: rolling back twice after moves 1 → 2 → 3 returns to 2, then to 1. Raises
        `ValueError` when the label has never been moved from an earlier version.
        """
        env = self._environment(environment)
        with self._store.session() as session:
            if session.get(PolicyLabelRow, (name, env, label)) is None:
                self._require(session, name)
                raise PolicyNotFoundError(f"guardrail policy {name!r} has no label {label!r} in {env}")
            entries = session.scalars(
                select(PolicyHistoryRow)
                .where(
                    PolicyHistoryRow.name == name,
                    PolicyHistoryRow.environment == env,
                    PolicyHistoryRow.label == label,
                    PolicyHistoryRow.kind.in_(("move", "rollback")),
                )
                .order_by(PolicyHistoryRow.id)
            ).all()
        undo: list[int | None] = []
        for entry in entries:
            if entry.kind == "move":
                undo.append(entry.from_version)
            elif undo:
                undo.pop()
        target = undo[-1] if undo else None
        if target is None:
            raise ValueError(f"guardrail policy {name} {env}/{label} has no previous version to roll back to")
        self._apply_move(name, env, label, target, by=by, reason=reason or "rollback", kind="rollback")
        return target

    def _apply_move(self, name: str, env: str, label: str, version: int, *, by: str, reason: str, kind: str) -> None:
        try:
            with self._store.session() as session:
                pointer = session.get(PolicyLabelRow, (name, env, label))
                previous = pointer.version if pointer else None
                if previous == version and kind == "move":
                    return
                if pointer is None:
                    pointer = PolicyLabelRow(name=name, environment=env, label=label)
                    session.add(pointer)
                pointer.version, pointer.updated_at, pointer.updated_by = version, datetime.now(UTC), by
                session.add(
                    _change(
                        name, kind, by, environment=env, label=label, from_version=previous, to_version=version,
                        reason=reason,
                    )
                )  # fmt: skip
        except IntegrityError as exc:  # another writer created the same label first
            raise RuntimeError(f"concurrent change to guardrail policy {name!r} {env}/{label}; retry") from exc
        if self._audit is not None:
            self._audit(
                by,
                f"guardrail_policy.label.{kind}",
                "guardrail_label",
                f"{name}/{env}/{label}",
                before={"version": previous} if previous is not None else None,
                after={"version": version},
                details={"policy": name, "from_version": previous, "to_version": version, "reason": reason},
            )

    def history(self, name: str) -> list[PolicyChange]:
        """Every new version, label move and rollback of the policy, oldest first."""
        with self._store.session() as session:
            self._require(session, name)
            rows = session.scalars(
                select(PolicyHistoryRow).where(PolicyHistoryRow.name == name).order_by(PolicyHistoryRow.id)
            ).all()
        return [
            PolicyChange(r.id, r.kind, r.environment, r.label, r.from_version, r.to_version, r.actor, r.reason, r.at)
            for r in rows
        ]


def _change(name: str, kind: str, actor: str, **fields: Any) -> PolicyHistoryRow:
    return PolicyHistoryRow(name=name, kind=kind, actor=actor, at=datetime.now(UTC), **fields)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"  # a source without a final newline would glue the diff's next line onto it
    return lines
