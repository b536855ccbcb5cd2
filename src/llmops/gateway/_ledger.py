"""The call ledger: every gateway call with its caller, tokens, cost and the price book that priced it.

Rows arrive through the journal. ``reprice`` recomputes past costs under another price book and stores them beside
the originals (which never change); ``costs`` reports spend by any attribution (model, user, team, app, key).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from llmops.gateway._prices import PriceBook
from llmops.gateway._tables import CallRepricingRow, GatewayCallRow, PriceBookRow
from llmops.gateway._types import Usage
from llmops.store import Store

__all__ = ["Ledger", "RepriceReport"]

_GROUPS = ("served_by", "model", "user", "team", "app", "key_name", "provider")


@dataclass
class RepriceReport:
    price_book: str
    calls: int = 0
    old_total_usd: float = 0.0
    new_total_usd: float = 0.0
    by_model: dict[str, tuple[float, float]] = field(default_factory=dict)  # alias -> (old, new)


class Ledger:
    def __init__(self, store: Store, flush: Callable[[], None]) -> None:
        self._store = store
        self._flush = flush  # drains the journal, so reads see every acknowledged call

    def save_price_book(self, book: PriceBook) -> None:
        """Record a price book (once per version: books are immutable)."""
        with self._store.session() as session:
            if session.get(PriceBookRow, book.version) is None:
                session.add(PriceBookRow(version=book.version, created_at=datetime.now(UTC), entries=book.entries()))

    def calls(self, *, since: datetime | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        self._flush()
        query = select(GatewayCallRow).order_by(GatewayCallRow.at)
        if since is not None:
            query = query.where(GatewayCallRow.at >= since)
        if limit is not None:
            query = query.limit(limit)
        with self._store.session() as session:
            return [
                {c.name: getattr(row, c.name) for c in GatewayCallRow.__table__.columns}
                for row in session.scalars(query)
            ]

    def costs(self, group_by: str = "served_by", *, since: datetime | None = None) -> dict[str, dict[str, float]]:
        """Spend, calls and tokens per value of ``group_by`` (served_by, model, user, team, app, key_name, provider)."""
        if group_by not in _GROUPS:
            raise ValueError(f"cannot group by {group_by!r}; choose one of {', '.join(_GROUPS)}")
        out: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "cost_usd": 0.0, "input_tokens": 0,
                                                                 "output_tokens": 0})  # fmt: skip
        for call in self.calls(since=since):
            entry = out[str(call[group_by] or "(none)")]
            entry["calls"] += 1
            entry["cost_usd"] += call["cost_usd"]
            entry["input_tokens"] += call["input_tokens"]
            entry["output_tokens"] += call["output_tokens"]
        return dict(out)

    def reprice(self, book: PriceBook, *, since: datetime | None = None) -> RepriceReport:
        """Cost every call (since ``since``) under ``book``; the results are stored per (call, book)."""
        self.save_price_book(book)
        report = RepriceReport(price_book=book.version)
        rows = []
        now = datetime.now(UTC)
        by_model: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for call in self.calls(since=since):
            if call["status"] != "ok" or call["cache_hit"]:
                continue
            usage = Usage(call["input_tokens"], call["output_tokens"], cached_input_tokens=call["cached_input_tokens"])
            new = book.cost(call["served_by"], usage)
            rows.append({"call_id": call["id"], "price_book": book.version, "cost_usd": new, "at": now})
            report.calls += 1
            report.old_total_usd += call["cost_usd"]
            report.new_total_usd += new
            by_model[call["served_by"]][0] += call["cost_usd"]
            by_model[call["served_by"]][1] += new
        if rows:
            insert = postgresql.insert if self._store.engine.dialect.name == "postgresql" else sqlite.insert
            statement = insert(CallRepricingRow)
            statement = statement.on_conflict_do_update(
                index_elements=["call_id", "price_book"], set_={"cost_usd": statement.excluded.cost_usd, "at": now}
            )
            with self._store.engine.begin() as connection:
                connection.execute(statement, rows)
        report.by_model = {alias: (old, new) for alias, (old, new) in by_model.items()}
        return report
