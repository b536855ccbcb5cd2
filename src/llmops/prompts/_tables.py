"""Tables of the prompt registry: prompts, their immutable versions, and labels that point at versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from llmops.store import Base

__all__ = ["PromptLabelRow", "PromptRow", "PromptVersionRow"]


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
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(200))
    commit_message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PromptLabelRow(Base):
    __tablename__ = "prompt_labels"

    prompt_name: Mapped[str] = mapped_column(ForeignKey("prompts.name"), primary_key=True)
    label: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(200))
