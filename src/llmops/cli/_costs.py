"""``llmops costs ...``: spend by any attribution and period, the chargeback CSV, budgets against spend."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmops._platform import Platform
from llmops.cli._common import console, open_platform
from llmops.governance._costs import (
    BudgetStatus,
    CostReport,
    CostRow,
    budget_status,
    chargeback_csv,
    parse_moment,
)

__all__ = ["costs_app"]

costs_app = typer.Typer(help="Cost allocation: spend by tag and period, chargeback, budgets.", no_args_is_help=True)

By = Annotated[
    list[str] | None,
    typer.Option("--by", help="key, user, team, app, model, tag, tag:NAME, cost_centre, day or month (repeatable)"),
]
Since = Annotated[str | None, typer.Option(help="from this moment on (2026-11, 2026-11-03 or ISO; UTC)")]
Until = Annotated[str | None, typer.Option(help="before this moment (exclusive)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


class Period(StrEnum):
    month = "month"
    day = "day"
    none = "none"


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def _report(platform: Platform, by: list[str], since: datetime | None, until: datetime | None) -> CostReport:
    return platform.cost_report(by, since, until)


@costs_app.command("report")
def report(by: By = None, since: Since = None, until: Until = None, as_json: AsJson = False) -> None:
    """Calls, tokens and cost grouped by the dimensions given, e.g. ``--by team --by month --since 2026-11``."""
    start, end = _moment(since, "--since"), _moment(until, "--until")
    with open_platform() as platform:
        result = _report(platform, by or [], start, end)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    table = Table(*result.by, "calls", "input tokens", "output tokens", "cost (USD)")
    for row in result.rows:
        table.add_row(*(row.group[d] or "(none)" for d in result.by), *_amounts(row))
    table.add_section()
    table.add_row(*["total", *[""] * (len(result.by) - 1)][: len(result.by)], *_amounts(result.total))
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


@costs_app.command("chargeback")
def chargeback(
    by: By = None,
    period: Annotated[Period, typer.Option(help="one row per group and period")] = Period.month,
    since: Since = None,
    until: Until = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write the CSV here (default: stdout)")] = None,
) -> None:
    """The chargeback CSV: one row per group (and period), then a TOTAL row. ``--by team --period month``."""
    dims = [*([period.value] if period is not Period.none else []), *(by or ["team"])]
    start, end = _moment(since, "--since"), _moment(until, "--until")
    with open_platform() as platform:  # a ValueError (unknown dimension, grouped by tag) is one red line
        result = _report(platform, dims, start, end)
        text = chargeback_csv(result)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}: {len(result.rows)} row(s), ${result.total.cost_usd:.6f} in all", highlight=False)


@costs_app.command("budgets")
def budgets(as_json: AsJson = False) -> None:
    """Every money budget against the ledger's spend in its current period: spent, remaining, soft/hard crossed."""
    with open_platform() as platform:
        statuses = budget_status(platform.gateway.limits.limits, platform.store, flush=platform.journal.flush)
    if as_json:
        console.print_json(json.dumps({"budgets": [s.to_dict() for s in statuses]}))
        return
    if not statuses:
        console.print("no money budgets are configured (gateway.limits with budget_usd or soft_budget_usd)")
        return
    table = Table("limit", "scope", "period (UTC)", "spent", "budget", "soft", "remaining", "used", "state")
    for status in statuses:
        table.add_row(*_budget_cells(status))
    console.print(table)


def _amounts(row: CostRow) -> list[str]:
    return [str(row.calls), str(row.input_tokens), str(row.output_tokens), f"{row.cost_usd:.6f}"]


def _budget_cells(status: BudgetStatus) -> list[str]:
    def money(value: float | None) -> str:
        return "" if value is None else f"${value:.4f}"

    state = "hard limit reached" if status.hard_reached else "soft alert" if status.soft_crossed else "ok"
    scope = status.scope if status.value is None else f"{status.scope} {status.value}"
    return [
        status.limit,
        scope,
        f"{status.period} from {status.window_start:%Y-%m-%d %H:%M}",
        money(status.spent_usd),
        money(status.budget_usd),
        money(status.soft_budget_usd),
        money(status.remaining_usd),
        "" if status.share is None else f"{status.share:.0%}",
        state,
    ]
