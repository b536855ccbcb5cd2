"""The relational store: engine, sessions and migrations. Each package keeps its own tables beside its code."""

from llmops.store._audit_hook import AuditHook
from llmops.store._base import Base
from llmops.store._journal import Journal
from llmops.store._store import Store, StoreError

__all__ = ["AuditHook", "Base", "Journal", "Store", "StoreError"]
