"""The prompt registry: immutable numbered versions, and labels (``production``) that point at them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from llmops.prompts._tables import PromptLabelRow, PromptRow, PromptVersionRow
from llmops.prompts._template import PromptTemplateError, TemplateRenderer
from llmops.store import Store

__all__ = ["PromptNotFoundError", "PromptRegistry", "PromptVersion"]

_ROLES = frozenset({"system", "user", "assistant"})


class PromptNotFoundError(LookupError):
    """No such prompt, version or label."""


@dataclass(frozen=True)
class PromptVersion:
    """One immutable version. ``render`` fills its messages in the sandbox."""

    name: str
    version: int
    messages: list[dict[str, str]]
    variables: list[str]
    params: dict[str, Any]
    content_hash: str
    author: str
    commit_message: str
    created_at: datetime

    @classmethod
    def _from_row(cls, row: PromptVersionRow) -> PromptVersion:
        return cls(
            name=row.prompt_name,
            version=row.version,
            messages=list(row.messages),
            variables=list(row.variables),
            params=dict(row.params),
            content_hash=row.content_hash,
            author=row.author,
            commit_message=row.commit_message,
            created_at=row.created_at,
        )


class PromptRegistry:
    """Stores prompt versions and labels, and renders versions.

    >>> v = registry.create("greet", [{"role": "user", "content": "Hi {{ name }}"}], author="ana")  # doctest: +SKIP
    >>> registry.set_label("greet", "production", v.version, by="ana")                            # doctest: +SKIP
    >>> registry.render(registry.get("greet"), {"name": "Bo"})                                    # doctest: +SKIP
    [{'role': 'user', 'content': 'Hi Bo'}]
    """

    def __init__(self, store: Store, renderer: TemplateRenderer | None = None) -> None:
        self._store = store
        self.renderer = renderer or TemplateRenderer()

    def create(
        self,
        name: str,
        messages: list[dict[str, str]],
        *,
        author: str,
        params: dict[str, Any] | None = None,
        commit_message: str = "",
        description: str = "",
    ) -> PromptVersion:
        """Save a new version, or return the newest version if its content is identical (no new version)."""
        messages = _validated_messages(messages)
        variables = sorted(set().union(*(self.renderer.variables(m["content"]) for m in messages)))
        params = dict(params or {})
        content = json.dumps({"messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
        content_hash = hashlib.sha256(content.encode()).hexdigest()
        with self._store.session() as session:
            if session.get(PromptRow, name) is None:
                session.add(PromptRow(name=name, description=description, created_at=datetime.now(UTC)))
                session.flush()
            latest = session.scalars(
                select(PromptVersionRow)
                .where(PromptVersionRow.prompt_name == name)
                .order_by(PromptVersionRow.version.desc())
                .limit(1)
            ).first()
            if latest is not None and latest.content_hash == content_hash:
                return PromptVersion._from_row(latest)
            row = PromptVersionRow(
                prompt_name=name,
                version=(latest.version + 1) if latest else 1,
                messages=messages,
                variables=variables,
                params=params,
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
            return PromptVersion._from_row(row)

    def get_version(self, name: str, version: int) -> PromptVersion:
        with self._store.session() as session:
            row = session.scalars(
                select(PromptVersionRow).where(
                    PromptVersionRow.prompt_name == name, PromptVersionRow.version == version
                )
            ).first()
            if row is None:
                raise PromptNotFoundError(f"prompt {name!r} has no version {version}")
            return PromptVersion._from_row(row)

    def get(self, name: str, *, label: str = "production") -> PromptVersion:
        """The version ``label`` points at."""
        with self._store.session() as session:
            label_row = session.get(PromptLabelRow, (name, label))
            if label_row is None:
                raise PromptNotFoundError(f"prompt {name!r} has no label {label!r}")
            version = label_row.version
        return self.get_version(name, version)

    def set_label(self, name: str, label: str, version: int, *, by: str) -> None:
        self.get_version(name, version)  # refuses a version that does not exist
        with self._store.session() as session:
            row = session.get(PromptLabelRow, (name, label))
            if row is None:
                row = PromptLabelRow(prompt_name=name, label=label)
                session.add(row)
            row.version = version
            row.updated_at = datetime.now(UTC)
            row.updated_by = by

    def labels(self, name: str) -> dict[str, int]:
        with self._store.session() as session:
            rows = session.scalars(select(PromptLabelRow).where(PromptLabelRow.prompt_name == name))
            return {row.label: row.version for row in rows}

    def list_prompts(self) -> list[dict[str, Any]]:
        """Every prompt with its newest version number and labels."""
        with self._store.session() as session:
            query = select(PromptVersionRow.prompt_name, func.max(PromptVersionRow.version)).group_by(
                PromptVersionRow.prompt_name
            )
            newest = {name: version for name, version in session.execute(query)}
            names = session.scalars(select(PromptRow.name).order_by(PromptRow.name)).all()
        return [{"name": n, "latest_version": newest.get(n), "labels": self.labels(n)} for n in names]

    def render(self, version: PromptVersion, variables: dict[str, Any]) -> list[dict[str, str]]:
        """The version's messages with ``variables`` filled in; a missing or unknown variable is an error."""
        declared = set(version.variables)
        missing = declared - variables.keys()
        unknown = variables.keys() - declared
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {sorted(missing)}")
            if unknown:
                parts.append(f"unknown {sorted(unknown)}")
            raise PromptTemplateError(
                f"prompt {version.name!r} v{version.version} takes {sorted(declared)}: {'; '.join(parts)}"
            )
        return [{"role": m["role"], "content": self.renderer.render(m["content"], variables)} for m in version.messages]


def _validated_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if not messages:
        raise PromptTemplateError("a prompt needs at least one message")
    out = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise PromptTemplateError(f"message {i}: role must be one of {sorted(_ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise PromptTemplateError(f"message {i}: content must be a string")
        out.append({"role": role, "content": content})
    return out
