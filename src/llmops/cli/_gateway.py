"""``llmops gateway ...``: the call ledger, cost reports and re-pricing from the terminal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from llmops.cli._common import console, with_platform
from llmops.gateway import PriceBook

__all__ = ["gateway_app"]

gateway_app = typer.Typer(help="The model gateway: calls, costs, price books.", no_args_is_help=True)

Days = Annotated[float | None, typer.Option(help="only the last N days")]


def _since(days: float | None) -> datetime | None:
    return datetime.now(UTC) - timedelta(days=days) if days else None


@gateway_app.command("costs")
def gateway_costs(
    by: Annotated[str, typer.Option(help="served_by, model, user, team, app, key_name or provider")] = "served_by",
    days: Days = None,
) -> None:
    """Spend, calls and tokens grouped by an attribution."""
    table = Table(by, "calls", "input tokens", "output tokens", "cost (USD)")
    rows = with_platform(lambda p: p.ledger.costs(by, since=_since(days)))
    for name, entry in sorted(rows.items(), key=lambda item: -item[1]["cost_usd"]):
        table.add_row(name, f"{entry['calls']:.0f}", f"{entry['input_tokens']:.0f}", f"{entry['output_tokens']:.0f}",
                      f"{entry['cost_usd']:.6f}")  # fmt: skip
    console.print(table)


@gateway_app.command("calls")
def gateway_calls(limit: int = 20, days: Days = None) -> None:
    """The most recent gateway calls."""
    calls = with_platform(lambda p: p.ledger.calls(since=_since(days)))[-limit:]
    table = Table("at (UTC)", "model", "served by", "status", "cache", "tokens in/out", "cost (USD)", "ms", "attempts")
    for c in calls:
        table.add_row(f"{c['at']:%Y-%m-%d %H:%M:%S}", c["model"], c["served_by"], c["status"], c["cache_hit"] or "",
                      f"{c['input_tokens']}/{c['output_tokens']}", f"{c['cost_usd']:.6f}", f"{c['latency_ms']:.1f}",
                      str(c["attempts"]))  # fmt: skip
    console.print(table)


@gateway_app.command("prices")
def gateway_prices() -> None:
    """The current price book: dollars per million tokens for every served model."""

    prices: PriceBook = with_platform(lambda p: p.gateway.prices)
    table = Table("model", "input", "output", "cached input", "source", title=f"price book {prices.version}")
    for alias, entry in prices.entries().items():
        table.add_row(alias, f"{entry['input_per_mtok']:g}", f"{entry['output_per_mtok']:g}",
                      f"{entry['cached_input_per_mtok']:g}", entry["source"])  # fmt: skip
    console.print(table)


@gateway_app.command("reprice")
def gateway_reprice(days: Days = None) -> None:
    """Recompute past costs under the current price book (the original costs are kept)."""

    report = with_platform(lambda p: p.ledger.reprice(p.gateway.prices, since=_since(days)))
    console.print(
        f"re-priced {report.calls} calls under {report.price_book}: "
        f"${report.old_total_usd:.6f} → ${report.new_total_usd:.6f}"
    )
    for alias, (old, new) in sorted(report.by_model.items()):
        console.print(f"  {alias}: ${old:.6f} → ${new:.6f}")
