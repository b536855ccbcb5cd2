"""Tables of the loop package: feedback, trigger firings, the actions they ran, and review items."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from llmops.store import Base

__all__ = ["ActionRunRow", "FeedbackRow", "ReviewItemRow", "TriggerFiringRow", "TriggerRuleRow"]


class FeedbackRow(Base):
    """Thumbs, a rating, a correction or a flag on one response, linked to its request's trace."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    app: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # thumbs | rating | correction | flag
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # thumbs: 1 up, 0 down; rating: 1..5
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    flag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user: Mapped[str | None] = mapped_column(String(200), nullable=True)


class TriggerFiringRow(Base):
    """A rule (or a runbook run) that fired, with what it saw: the inputs are kept so any firing can be explained."""

    __tablename__ = "trigger_firings"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rule: Mapped[str] = mapped_column(String(200), index=True)
    source: Mapped[str] = mapped_column(String(16))  # rule | runbook | manual
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(24))  # acted | pending_approval | failed | partly_failed
    actor: Mapped[str] = mapped_column(String(200))


class ActionRunRow(Base):
    """One action a firing ran (or holds for approval), with its parameters and result."""

    __tablename__ = "action_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    firing_id: Mapped[str] = mapped_column(String(40), index=True)
    position: Mapped[int] = mapped_column()
    action: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(24))  # done | failed | pending_approval | rejected | check_failed
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ReviewItemRow(Base):
    """Something a person should look at: opened by an action, closed by a reviewer."""

    __tablename__ = "review_items"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    title: Mapped[str] = mapped_column(String(500))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # open | resolved | dismissed
    firing_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The request whose answer the item holds (None for other items): callers poll for their answer by it.
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    resolved_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True)


class TriggerRuleRow(Base):
    """A trigger rule created through the API (rules from the YAML file are configuration, not rows)."""

    __tablename__ = "trigger_rules"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
