"""Governance: who may do what (roles), the tamper-evident audit log, lineage that explains and replays any
answer, the maturity assessment and the EU AI Act evidence pack."""

from llmops.governance._access import AccessControl, Identity
from llmops.governance._audit import AuditLog, AuditVerification, content_hash
from llmops.governance._evidence import evidence_pack
from llmops.governance._evidence_report import render_evidence_markdown
from llmops.governance._keys import InvalidKeyError
from llmops.governance._lineage import Lineage, NotReplayableError
from llmops.governance._lineage_report import render_markdown, render_replay_markdown
from llmops.governance._maturity import DIMENSIONS, MaturityReport, assess_maturity
from llmops.governance._roles import ALL_PROJECTS, PERMISSIONS, ROLES, RoleDirectory

__all__ = [
    "ALL_PROJECTS",
    "DIMENSIONS",
    "PERMISSIONS",
    "ROLES",
    "AccessControl",
    "AuditLog",
    "AuditVerification",
    "Identity",
    "InvalidKeyError",
    "Lineage",
    "MaturityReport",
    "NotReplayableError",
    "RoleDirectory",
    "assess_maturity",
    "content_hash",
    "evidence_pack",
    "render_evidence_markdown",
    "render_markdown",
    "render_replay_markdown",
]
