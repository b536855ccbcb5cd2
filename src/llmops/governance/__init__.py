"""Governance: who may do what (roles) and the tamper-evident audit log; lineage and the rest arrive with the
governance issue."""

from llmops.governance._audit import AuditLog, AuditVerification, content_hash
from llmops.governance._roles import ROLES, RoleDirectory

__all__ = ["ROLES", "AuditLog", "AuditVerification", "RoleDirectory", "content_hash"]
