"""Governance: who may do what (roles); audit, lineage and the rest arrive with the governance issue."""

from llmops.governance._roles import ROLES, RoleDirectory

__all__ = ["ROLES", "RoleDirectory"]
