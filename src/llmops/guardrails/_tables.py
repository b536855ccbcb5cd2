"""Tables of the guardrail policy registry.

A version row (`PolicyVersionRow`) is written once and never updated. Labels, the only thing that moves, live in
their own table, and every move is also appended to the history table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from llmops.store import Base

__all__ = ["PolicyHistoryRow", "PolicyLabelRow", "PolicyRow", "PolicyVersionRow"]


class PolicyRow(Base):
    __tablename__ = "guardrail_policies"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")  # the newest version's
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyVersionRow(Base):
    """Never updated, never deleted: a change is a new row with the next version number."""

    __tablename__ = "guardrail_policy_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(ForeignKey("guardrail_policies.name"))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)  # the YAML exactly as it was given, comments included
    content_hash: Mapped[str] = mapped_column(String(64))  # of the validated policy, so formatting is no change
    author: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyLabelRow(Base):
    """Where a label points, per environment."""

    __tablename__ = "guardrail_policy_labels"

    name: Mapped[str] = mapped_column(ForeignKey("guardrail_policies.name"), primary_key=True)
    environment: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(200))


class PolicyHistoryRow(Base):
    """Append-only: every new version, label move and rollback, with who, when and why."""

    __tablename__ = "guardrail_policy_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # create | move | rollback
    environment: Mapped[str | None] = mapped_column(String(32), nullable=True)
    label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
