"""Tables of the gateway: the call ledger (one row per gateway call), price books, and re-pricings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from llmops.store import Base

__all__ = ["CallRepricingRow", "GatewayCallRow", "PriceBookRow"]


class GatewayCallRow(Base):
    """Written through the journal, so its key is natural (the call id) and replays insert nothing twice."""

    __tablename__ = "gateway_calls"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model: Mapped[str] = mapped_column(String(200))  # what the client asked for (alias or router)
    served_by: Mapped[str] = mapped_column(String(200))  # the alias that answered
    upstream_model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(64))
    key_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    team: Mapped[str | None] = mapped_column(String(200), nullable=True)
    app: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cached_input_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    price_book: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16))  # ok | error
    cache_hit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    fallbacks: Mapped[list[str]] = mapped_column(JSON, default=list)
    route: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class PriceBookRow(Base):
    __tablename__ = "price_books"

    version: Mapped[str] = mapped_column(String(80), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    entries: Mapped[dict[str, Any]] = mapped_column(JSON)


class CallRepricingRow(Base):
    """The cost of a past call under another price book; the original cost on the call row never changes."""

    __tablename__ = "gateway_call_repricings"

    call_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    price_book: Mapped[str] = mapped_column(String(80), primary_key=True)
    cost_usd: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
