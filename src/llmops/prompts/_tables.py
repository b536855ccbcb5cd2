"""Tables of the prompt registry.

Content rows (`PromptVersionRow`) are written once and never updated. Everything that changes over a version's life
(its stage, whether it is archived, the labels that point at it) lives in other tables, and every change is also
appended to a history table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from llmops.store import Base

__all__ = [
    "ChangeRequestRow",
    "ExperimentOutcomeRow",
    "ExperimentRow",
    "LabelHistoryRow",
    "PromptCheckRow",
    "PromptLabelRow",
    "PromptPolicyRow",
    "PromptReviewRow",
    "PromptRow",
    "PromptStageRow",
    "PromptVersionRow",
]


class PromptRow(Base):
    __tablename__ = "prompts"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PromptVersionRow(Base):
    """Never updated, never deleted: a change is a new row with the next version number."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("prompt_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prompt_name: Mapped[str] = mapped_column(ForeignKey("prompts.name"))
    version: Mapped[int] = mapped_column(Integer)
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    variables: Mapped[list[str]] = mapped_column(JSON)
    variable_types: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    examples: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    commit_message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PromptStageRow(Base):
    """A version's lifecycle stage and archive flag (a version without a row is a draft)."""

    __tablename__ = "prompt_stages"

    prompt_name: Mapped[str] = mapped_column(ForeignKey("prompts.name"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[str] = mapped_column(String(16))
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(200))


class PromptLabelRow(Base):
    """Where a label points, per environment."""

    __tablename__ = "prompt_labels"

    prompt_name: Mapped[str] = mapped_column(ForeignKey("prompts.name"), primary_key=True)
    environment: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(200))


class LabelHistoryRow(Base):
    """Append-only: every label move, rollback and stage change, with who, when and why."""

    __tablename__ = "prompt_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prompt_name: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # move | rollback | stage | archive
    environment: Mapped[str | None] = mapped_column(String(32), nullable=True)
    label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")  # a stage move "draft -> testing", or the reason
    actor: Mapped[str] = mapped_column(String(200))
    change_request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PromptPolicyRow(Base):
    """Protects a label: moving it needs approvals (and optionally a passed check on the target version)."""

    __tablename__ = "prompt_policies"
    __table_args__ = (UniqueConstraint("prompt_name", "environment", "label"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    prompt_name: Mapped[str] = mapped_column(String(200))  # "*" for every prompt
    environment: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(100))
    required_approvals: Mapped[int] = mapped_column(Integer)
    required_check: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ChangeRequestRow(Base):
    __tablename__ = "prompt_change_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prompt_name: Mapped[str] = mapped_column(String(200), index=True)
    environment: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(100))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int] = mapped_column(Integer)
    policy_id: Mapped[int] = mapped_column(Integer)
    requested_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))  # pending | applied | rejected | cancelled
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PromptReviewRow(Base):
    __tablename__ = "prompt_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("prompt_change_requests.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PromptCheckRow(Base):
    """The result of a check (an evaluation gate, say) run on one version."""

    __tablename__ = "prompt_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prompt_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    passed: Mapped[bool] = mapped_column(Boolean)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    recorded_by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ExperimentRow(Base):
    """An A/B test or canary: a label's traffic split between versions by weight."""

    __tablename__ = "prompt_experiments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    prompt_name: Mapped[str] = mapped_column(String(200), index=True)
    environment: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(100))
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{"version": 1, "weight": 0.9}, ...]
    control_version: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)  # primary metric, bounds, minimum samples, auto actions
    status: Mapped[str] = mapped_column(String(16))  # running | promoted | rolled_back | stopped
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ExperimentOutcomeRow(Base):
    """One observed value of a metric for one request served by one variant (feedback, a score, an error)."""

    __tablename__ = "prompt_experiment_outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("prompt_experiments.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(40))
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
