"""The prompt registry: immutable numbered versions, lifecycle stages, labels per environment, and their history.

Moving a label that a policy protects goes through `Approvals` (``registry.approvals``); A/B tests and canaries
through `Experiments` (``registry.experiments``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from llmops.prompts._cache import StaleCache
from llmops.prompts._model import (
    ALLOWED_STAGE_MOVES,
    STAGES,
    PromptSpec,
    PromptVersion,
    check_name,
    check_variable_values,
)
from llmops.prompts._tables import LabelHistoryRow, PromptLabelRow, PromptRow, PromptStageRow, PromptVersionRow
from llmops.prompts._template import PromptTemplateError, TemplateRenderer
from llmops.store import AuditHook, Store

__all__ = ["HistoryEntry", "PromptNotFoundError", "PromptRegistry", "VersionInfo"]

DEFAULT_ENVIRONMENTS = ("dev", "staging", "prod")
RoleLookup = Callable[[str], frozenset[str]]


class PromptNotFoundError(LookupError):
    """No such prompt, version or label."""


@dataclass(frozen=True)
class VersionInfo:
    version: int
    stage: str
    archived: bool
    author: str
    commit_message: str
    created_at: datetime
    content_hash: str
    labels: list[str]  # "environment/label"


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    kind: str
    environment: str | None
    label: str | None
    from_version: int | None
    to_version: int | None
    detail: str
    actor: str
    change_request_id: int | None
    at: datetime


def _version_from_row(row: PromptVersionRow) -> PromptVersion:
    types = dict(row.variable_types or {})
    return PromptVersion(
        name=row.prompt_name,
        version=row.version,
        messages=list(row.messages),
        variables={name: types.get(name, "any") for name in row.variables},
        params=dict(row.params),
        examples=list(row.examples or []),
        tags=list(row.tags or []),
        content_hash=row.content_hash,
        author=row.author,
        commit_message=row.commit_message,
        created_at=row.created_at,
    )


class PromptRegistry:
    """Stores prompt versions and labels, and renders versions in the sandbox.

    >>> v = registry.create("greet", [{"role": "user", "content": "Hi {{ name }}"}], author="ana")  # doctest: +SKIP
    >>> registry.move_label("greet", "production", v.version, environment="dev", by="ana")        # doctest: +SKIP
    >>> registry.render(registry.get("greet", environment="dev"), {"name": "Bo"})                 # doctest: +SKIP
    [{'role': 'user', 'content': 'Hi Bo'}]
    """

    def __init__(
        self,
        store: Store,
        renderer: TemplateRenderer | None = None,
        *,
        roles: RoleLookup | None = None,
        environments: Iterable[str] = DEFAULT_ENVIRONMENTS,
        default_environment: str = "dev",
        cache_ttl: float = 10.0,
        audit: AuditHook | None = None,
    ) -> None:
        """``audit(actor, action, object_type, object_id, before=, after=, details=)`` is told of every label
        move and rollback (the platform passes the governance audit log)."""
        from llmops.prompts._approvals import Approvals
        from llmops.prompts._experiments import Experiments

        self._store = store
        self.renderer = renderer or TemplateRenderer()
        self.environments = tuple(check_name("environment", e) for e in environments)
        if default_environment not in self.environments:
            raise ValueError(f"default environment {default_environment!r} is not one of {self.environments}")
        self.default_environment = default_environment
        self._labels_cache: StaleCache[PromptVersion] = StaleCache(cache_ttl, (OperationalError, OSError))
        self._versions_cache: dict[tuple[str, int], PromptVersion] = {}  # versions never change: no expiry
        self.approvals = Approvals(store, self, roles or (lambda _user: frozenset()))
        self.experiments = Experiments(store, self, cache_ttl=cache_ttl)
        self._audit = audit

    # ---- versions ---------------------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        messages: list[dict[str, str]],
        *,
        author: str,
        variables: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        examples: list[dict[str, Any]] | None = None,
        tags: list[str] | None = None,
        commit_message: str = "",
        description: str = "",
    ) -> PromptVersion:
        """Save a new version (stage ``draft``), or return the newest one if its content is identical."""
        check_name("prompt name", name)
        spec = PromptSpec.parse(
            {
                "messages": messages,
                "variables": variables,
                "params": params or {},
                "examples": examples or [],
                "tags": tags or [],
            }
        )
        used = set().union(*(self.renderer.variables(m.content) for m in spec.messages))
        declared = dict(spec.variables) if spec.variables is not None else dict.fromkeys(sorted(used), "any")
        undeclared = used - declared.keys()
        if undeclared:
            raise PromptTemplateError(f"the templates use undeclared variables {sorted(undeclared)}")
        content: dict[str, Any] = {
            "messages": [m.model_dump() for m in spec.messages],
            "variables": declared,
            "params": spec.params.model_dump(exclude_none=True),
            "examples": spec.examples,
            "tags": sorted(set(spec.tags)),
        }
        content_hash = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        with self._store.session() as session:
            if session.get(PromptRow, name) is None:
                session.add(PromptRow(name=name, description=description, created_at=datetime.now(UTC)))
                session.flush()
            latest = self._latest_row(session, name)
            if latest is not None and latest.content_hash == content_hash:
                return _version_from_row(latest)
            row = PromptVersionRow(
                prompt_name=name,
                version=(latest.version + 1) if latest else 1,
                messages=content["messages"],
                variables=sorted(declared),
                variable_types=declared,
                params=content["params"],
                examples=content["examples"],
                tags=content["tags"],
                content_hash=content_hash,
                author=author,
                commit_message=commit_message,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:  # another writer took the same version number
                raise RuntimeError(f"concurrent change to prompt {name!r}; retry") from exc
            created = _version_from_row(row)
        if self._audit is not None:
            self._audit(
                author,
                "prompt.version.create",
                "prompt_version",
                f"{name}@{created.version}",
                before=latest.content_hash if latest else None,
                after=content_hash,
                details={"message": commit_message} if commit_message else None,
            )
        return created

    @staticmethod
    def _latest_row(session: Session, name: str) -> PromptVersionRow | None:
        return session.scalars(
            select(PromptVersionRow)
            .where(PromptVersionRow.prompt_name == name)
            .order_by(PromptVersionRow.version.desc())
            .limit(1)
        ).first()

    def get_version(self, name: str, version: int) -> PromptVersion:
        cached = self._versions_cache.get((name, version))
        if cached is not None:
            return cached
        with self._store.session() as session:
            row = session.scalars(
                select(PromptVersionRow).where(
                    PromptVersionRow.prompt_name == name, PromptVersionRow.version == version
                )
            ).first()
            if row is None:
                raise PromptNotFoundError(f"prompt {name!r} has no version {version}")
            found = _version_from_row(row)
        self._versions_cache[(name, version)] = found
        return found

    def latest(self, name: str) -> PromptVersion:
        with self._store.session() as session:
            row = self._latest_row(session, name)
            if row is None:
                raise PromptNotFoundError(f"no prompt named {name!r}")
            return _version_from_row(row)

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version, oldest first, with its stage, archive flag and the labels pointing at it."""
        with self._store.session() as session:
            rows = session.scalars(
                select(PromptVersionRow).where(PromptVersionRow.prompt_name == name).order_by(PromptVersionRow.version)
            ).all()
            if not rows:
                raise PromptNotFoundError(f"no prompt named {name!r}")
            stages = {
                s.version: s for s in session.scalars(select(PromptStageRow).where(PromptStageRow.prompt_name == name))
            }
            pointers = session.scalars(select(PromptLabelRow).where(PromptLabelRow.prompt_name == name)).all()
        return [
            VersionInfo(
                version=r.version,
                stage=stages[r.version].stage if r.version in stages else "draft",
                archived=stages[r.version].archived if r.version in stages else False,
                author=r.author,
                commit_message=r.commit_message,
                created_at=r.created_at,
                content_hash=r.content_hash,
                labels=sorted(f"{p.environment}/{p.label}" for p in pointers if p.version == r.version),
            )
            for r in rows
        ]

    def list_prompts(self) -> list[dict[str, Any]]:
        """Every prompt with its description, newest version number and labels per environment."""
        with self._store.session() as session:
            query = select(PromptVersionRow.prompt_name, func.max(PromptVersionRow.version)).group_by(
                PromptVersionRow.prompt_name
            )
            newest = {name: version for name, version in session.execute(query)}
            prompts = session.scalars(select(PromptRow).order_by(PromptRow.name)).all()
            pointers = session.scalars(select(PromptLabelRow)).all()
        labels: dict[str, dict[str, dict[str, int]]] = {}
        for p in pointers:
            labels.setdefault(p.prompt_name, {}).setdefault(p.environment, {})[p.label] = p.version
        return [
            {
                "name": p.name,
                "description": p.description,
                "latest_version": newest.get(p.name),
                "labels": labels.get(p.name, {}),
            }
            for p in prompts
        ]

    def diff(self, name: str, a: int, b: int) -> str:
        """A unified diff of two versions: messages, variables, parameters, examples and tags."""
        left, right = self.get_version(name, a), self.get_version(name, b)
        return "".join(
            difflib.unified_diff(
                _diffable(left).splitlines(keepends=True),
                _diffable(right).splitlines(keepends=True),
                fromfile=f"{name} v{a}",
                tofile=f"{name} v{b}",
            )
        )

    def render(self, version: PromptVersion, variables: dict[str, Any]) -> list[dict[str, str]]:
        """The version's messages with ``variables`` filled in; missing, unknown or mistyped variables are refused."""
        check_variable_values(version, variables)
        return [{"role": m["role"], "content": self.renderer.render(m["content"], variables)} for m in version.messages]

    # ---- lifecycle --------------------------------------------------------------------------------------------

    def stage(self, name: str, version: int) -> str:
        self.get_version(name, version)
        with self._store.session() as session:
            row = session.get(PromptStageRow, (name, version))
            return row.stage if row else "draft"

    def set_stage(self, name: str, version: int, stage: str, *, by: str) -> None:
        """Move a version along draft → testing → production → deprecated; other moves are refused."""
        if stage not in STAGES:
            raise PromptTemplateError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        self.get_version(name, version)
        with self._store.session() as session:
            row = session.get(PromptStageRow, (name, version))
            current = row.stage if row else "draft"
            if stage not in ALLOWED_STAGE_MOVES[current]:
                allowed = ", ".join(sorted(ALLOWED_STAGE_MOVES[current])) or "none"
                raise PromptTemplateError(f"{name} v{version} is {current}: it can move to {allowed}, not to {stage}")
            if row is None:
                row = PromptStageRow(prompt_name=name, version=version, archived=False)
                session.add(row)
            row.stage, row.updated_at, row.updated_by = stage, datetime.now(UTC), by
            session.add(_history(name, "stage", by, to_version=version, detail=f"{current} -> {stage}"))

    def archive(self, name: str, version: int, *, by: str) -> None:
        """Hide a version from default listings; it stays readable and is never deleted."""
        self.get_version(name, version)
        with self._store.session() as session:
            if any(
                p.version == version
                for p in session.scalars(select(PromptLabelRow).where(PromptLabelRow.prompt_name == name))
            ):
                raise PromptTemplateError(f"{name} v{version} has labels pointing at it; move them first")
            row = session.get(PromptStageRow, (name, version))
            if row is None:
                row = PromptStageRow(prompt_name=name, version=version, stage="draft")
                session.add(row)
            row.archived, row.updated_at, row.updated_by = True, datetime.now(UTC), by
            session.add(_history(name, "archive", by, to_version=version))

    # ---- labels -----------------------------------------------------------------------------------------------

    def _environment(self, environment: str | None) -> str:
        env = environment or self.default_environment
        if env not in self.environments:
            raise PromptNotFoundError(f"unknown environment {env!r}; environments are {', '.join(self.environments)}")
        return env

    def resolve(self, name: str, *, label: str = "production", environment: str | None = None) -> PromptVersion:
        """The version ``label`` points at in ``environment``, read from the store (no cache)."""
        env = self._environment(environment)
        with self._store.session() as session:
            pointer = session.get(PromptLabelRow, (name, env, label))
            if pointer is None:
                raise PromptNotFoundError(f"prompt {name!r} has no label {label!r} in {env}")
            version = pointer.version
        return self.get_version(name, version)

    def get(self, name: str, *, label: str = "production", environment: str | None = None) -> PromptVersion:
        """Like `resolve`, cached for ``cache_ttl`` seconds; serves the last good version if the store is down."""
        env = environment or self.default_environment
        return self._labels_cache.get((name, env, label), lambda: self.resolve(name, label=label, environment=env))

    def labels(self, name: str, environment: str | None = None) -> dict[str, int]:
        env = self._environment(environment)
        with self._store.session() as session:
            rows = session.scalars(
                select(PromptLabelRow).where(PromptLabelRow.prompt_name == name, PromptLabelRow.environment == env)
            )
            return {row.label: row.version for row in rows}

    def move_label(
        self, name: str, label: str, version: int, *, environment: str | None = None, by: str, reason: str = ""
    ) -> None:
        """Point ``label`` at ``version``. A label protected by a policy is refused: request approval instead."""
        env = self._environment(environment)
        check_name("label", label)
        self.get_version(name, version)
        self.approvals.refuse_if_protected(name, env, label)
        self._apply_move(name, env, label, version, by=by, reason=reason, kind="move")

    def rollback(self, name: str, label: str, *, environment: str | None = None, by: str, reason: str = "") -> int:
        """Undo the label's last move: put it back on the version it pointed at before. Returns that version.

        Rollbacks stack like undo: rolling back twice after moves 1 → 2 → 3 returns to 2, then to 1. A rollback
        restores a state that was already in force (and approved, if the label is protected), so it does not wait
        for approvals; it is recorded like any move.
        """
        env = self._environment(environment)
        with self._store.session() as session:
            if session.get(PromptLabelRow, (name, env, label)) is None:
                raise PromptNotFoundError(f"prompt {name!r} has no label {label!r} in {env}")
            entries = session.scalars(
                select(LabelHistoryRow)
                .where(
                    LabelHistoryRow.prompt_name == name,
                    LabelHistoryRow.environment == env,
                    LabelHistoryRow.label == label,
                    LabelHistoryRow.kind.in_(("move", "rollback")),
                )
                .order_by(LabelHistoryRow.id)
            ).all()
        undo: list[int | None] = []
        for entry in entries:
            if entry.kind == "move":
                undo.append(entry.from_version)
            elif undo:
                undo.pop()
        target = undo[-1] if undo else None
        if target is None:
            raise PromptTemplateError(f"{name} {env}/{label} has no previous version to roll back to")
        self._apply_move(name, env, label, target, by=by, reason=reason or "rollback", kind="rollback")
        return target

    def _apply_move(
        self,
        name: str,
        environment: str,
        label: str,
        version: int,
        *,
        by: str,
        reason: str,
        kind: str,
        change_request_id: int | None = None,
    ) -> None:
        with self._store.session() as session:
            pointer = session.get(PromptLabelRow, (name, environment, label))
            previous = pointer.version if pointer else None
            if pointer is None:
                pointer = PromptLabelRow(prompt_name=name, environment=environment, label=label)
                session.add(pointer)
            pointer.version, pointer.updated_at, pointer.updated_by = version, datetime.now(UTC), by
            session.add(
                _history(
                    name,
                    kind,
                    by,
                    environment=environment,
                    label=label,
                    from_version=previous,
                    to_version=version,
                    detail=reason,
                    change_request_id=change_request_id,
                )
            )
        if self._audit is not None:
            self._audit(
                by,
                f"prompt.label.{kind}",
                "prompt_label",
                f"{name}/{environment}/{label}",
                before={"version": previous} if previous is not None else None,
                after={"version": version},
                details={"prompt": name, "from_version": previous, "to_version": version, "reason": reason},
            )

    def history(self, name: str) -> list[HistoryEntry]:
        """Every label move, rollback, stage change and archive of the prompt, oldest first."""
        with self._store.session() as session:
            rows = session.scalars(
                select(LabelHistoryRow).where(LabelHistoryRow.prompt_name == name).order_by(LabelHistoryRow.id)
            ).all()
        return [
            HistoryEntry(
                r.id, r.kind, r.environment, r.label, r.from_version, r.to_version, r.detail, r.actor,
                r.change_request_id, r.at,
            )
            for r in rows
        ]  # fmt: skip


def _history(name: str, kind: str, actor: str, **fields: Any) -> LabelHistoryRow:
    return LabelHistoryRow(prompt_name=name, kind=kind, actor=actor, at=datetime.now(UTC), **fields)


def _diffable(version: PromptVersion) -> str:
    parts = [f"### {m['role']}\n{m['content']}\n" for m in version.messages]
    parts.append("### variables\n" + "".join(f"{k}: {v}\n" for k, v in sorted(version.variables.items())))
    parts.append("### params\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in sorted(version.params.items())))
    if version.examples:
        parts.append("### examples\n" + "".join(json.dumps(e, sort_keys=True) + "\n" for e in version.examples))
    if version.tags:
        parts.append("### tags\n" + ", ".join(version.tags) + "\n")
    return "\n".join(parts)
