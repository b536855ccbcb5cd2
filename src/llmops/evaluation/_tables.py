"""Tables of the evaluation package.

Dataset versions and their items are written once and never updated: a change is a new version. Experiments grow
one result row per example as the run goes (which is what makes a run resumable); online scores are keyed by the
request they scored, so the observability views join them to traces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from llmops.store import Base

__all__ = [
    "DatasetDraftRow",
    "DatasetItemRow",
    "DatasetRow",
    "DatasetVersionRow",
    "EvalExperimentRow",
    "EvalResultRow",
    "OnlineScoreRow",
]


class DatasetRow(Base):
    __tablename__ = "eval_datasets"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetVersionRow(Base):
    """Never updated, never deleted."""

    __tablename__ = "eval_dataset_versions"
    __table_args__ = (UniqueConstraint("dataset", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(ForeignKey("eval_datasets.name"))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    items: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(200))  # the file, "traces: <filter>", "review", ...
    author: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetItemRow(Base):
    __tablename__ = "eval_dataset_items"
    __table_args__ = (UniqueConstraint("version_id", "example_id"),)

    version_id: Mapped[int] = mapped_column(ForeignKey("eval_dataset_versions.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    example_id: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class DatasetDraftRow(Base):
    """A candidate example waiting for review (synthetic or from traces) before it may enter a version."""

    __tablename__ = "eval_dataset_drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(200), index=True)
    origin: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending | accepted | rejected
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reviewed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


class EvalExperimentRow(Base):
    __tablename__ = "eval_experiments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    dataset: Mapped[str] = mapped_column(String(200))
    dataset_version: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # resolved: exact prompt, model, snapshot and policy versions
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # metric name -> {"params": ..., "higher_is_better": ...}
    status: Mapped[str] = mapped_column(String(16))  # running | finished | failed
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EvalResultRow(Base):
    """One example's output and scores in one experiment, committed as soon as it is scored."""

    __tablename__ = "eval_results"

    experiment_id: Mapped[str] = mapped_column(ForeignKey("eval_experiments.id"), primary_key=True)
    example_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    cache_key: Mapped[str] = mapped_column(String(64), index=True)  # configuration hash + example content hash
    input: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)
    contexts: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)  # metric -> {"value", "error", "details", "spec"}
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    abstained: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OnlineScoreRow(Base):
    """A metric computed on a sampled production request (written through the journal, keyed for idempotence)."""

    __tablename__ = "eval_online_scores"

    request_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    metric: Mapped[str] = mapped_column(String(100), primary_key=True)
    app: Mapped[str] = mapped_column(String(200), index=True)
    trace_id: Mapped[str] = mapped_column(String(32), index=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
