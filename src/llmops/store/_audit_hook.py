"""The shape of the audit callback packages are handed, so they report changes without importing governance."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["AuditHook"]


class AuditHook(Protocol):
    """Record that ``actor`` did ``action`` to an object; ``before``/``after`` are states, stored as hashes."""

    def __call__(
        self,
        actor: str,
        action: str,
        object_type: str,
        object_id: str,
        *,
        before: Any = None,
        after: Any = None,
        details: dict[str, Any] | None = None,
    ) -> object: ...
