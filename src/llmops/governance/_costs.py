"""Cost allocation: spend from the gateway's call ledger grouped by any attribution and period, a chargeback CSV,
and each configured budget against what was spent in its current period.

Every gateway call is a ledger row naming its API key, user, team, app, tags, the model that served it, its tokens
and its cost. A report groups those rows by any of these dimensions:

- ``key``, ``user``, ``team``, ``app``: the caller's attribution, as recorded on the call.
- ``model``: the model alias that answered (``served_by``), which is what was priced.
- ``day``, ``month``: the call's UTC date (``2026-11-03``) or month (``2026-11``).
- ``tag``: each of the call's tags. A call with two tags counts under both, so **totals by tag may exceed the
  grand total**; the report says so (``CostReport.expands``) and the chargeback refuses it.
- ``tag:NAME``: the value of the call's first ``NAME:value`` tag (``tag:env`` groups ``env:prod`` and
  ``env:dev``). One value per call, so these totals add up to the grand total.
- ``cost_centre``: the key's configured ``cost_centre`` when it has one; otherwise the call's first
  ``cost_centre:X`` tag (also spelled ``cost-centre:``, ``cost_center:``, ``cost-center:``). A key's tags come before
  the request's in the ledger, so a tag on the key wins over one the caller sent. One value per call.

The database sums the calls per distinct attribution (one GROUP BY; tags grouped as their JSON text), and only those
groups are expanded and merged here: 200,000 calls report in 0.3 to 0.5 s on SQLite and PostgreSQL.

The key's ``cost_centre`` is read from the configuration when the report is made (the ledger records tags, not the
key's settings), so moving a key to another cost centre re-attributes its past calls too; a ``cost_centre:`` tag on
the key is recorded on each call and keeps the attribution it had at the time.

>>> report = cost_report(store, by=["team", "month"], since=datetime(2026, 11, 1, tzinfo=UTC))  # doctest: +SKIP
>>> print(chargeback_csv(report))                                                              # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, func, literal_column, select

from llmops._settings import ApiKeyConfig, LimitConfig, Settings
from llmops.gateway._tables import GatewayCallRow
from llmops.store import Store

__all__ = [
    "DIMENSIONS",
    "BudgetStatus",
    "CostReport",
    "CostRow",
    "budget_status",
    "chargeback_csv",
    "cost_report",
    "parse_moment",
]

DIMENSIONS = ("key", "user", "team", "app", "model", "tag", "cost_centre", "day", "month")
_COST_CENTRE_TAGS = ("cost_centre", "cost-centre", "cost_center", "cost-center")
_EXPANDS_NOTE = "a call with several tags counts under each of them: totals by tag may exceed the grand total"
_COLUMN_OF = {"key": "key_name", "user": "user", "team": "team", "app": "app", "model": "served_by"}


@dataclass(frozen=True)
class _Group:
    """Calls that share every selected field (one row of the ledger's GROUP BY)."""

    fields: dict[str, Any]  # key_name, user, team, app, served_by, day, month, tags (a list)
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class CostRow:
    """One group's spend. ``group`` maps each dimension to its value (None: the call had none)."""

    group: dict[str, str | None]
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.group,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }


@dataclass(frozen=True)
class CostReport:
    """Spend grouped ``by`` dimensions over ``[since, until)``; ``total`` counts every call once."""

    by: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    rows: tuple[CostRow, ...]
    total: CostRow
    expands: bool  # grouped by ``tag``: a call may count in several rows
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": list(self.by),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "rows": [row.to_dict() for row in self.rows],
            "total": self.total.to_dict(),
            "expands": self.expands,
            "notes": list(self.notes),
        }


@dataclass
class _Sum:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, group: _Group) -> None:
        self.calls += group.calls
        self.input_tokens += group.input_tokens
        self.output_tokens += group.output_tokens
        self.cost_usd += group.cost_usd

    def row(self, group: dict[str, str | None]) -> CostRow:
        return CostRow(group, self.calls, self.input_tokens, self.output_tokens, self.cost_usd)


def parse_moment(text: str) -> datetime:
    """A moment from ``2026-11`` (the month's start), ``2026-11-03`` or an ISO datetime; naive means UTC.

    Raises ValueError naming the accepted forms."""
    text = text.strip()
    try:
        if len(text) == 7 and text[4] == "-":
            moment = datetime(int(text[:4]), int(text[5:]), 1)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date: use 2026-11, 2026-11-03 or 2026-11-03T12:00:00+00:00") from exc
    return _utc(moment)


def cost_report(
    store: Store,
    *,
    by: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
    keys: Sequence[ApiKeyConfig] = (),
    centres: Mapping[str, str] | None = None,
    flush: Callable[[], None] | None = None,
) -> CostReport:
    """Spend, calls and tokens of the ledger's calls in ``[since, until)`` grouped by ``by`` (see the module doc).

    ``keys`` are the configured API keys (for their ``cost_centre``) and ``centres`` the cost centre of each stored
    key by id (``ApiKeys.centres``); ``flush`` drains the journal first, so the report includes every acknowledged
    call. Raises ValueError for an unknown dimension or an empty period."""
    dims = _check_dimensions(by)
    since, until = _period(since, until)
    centres = {**(centres or {}), **{k.name: k.cost_centre for k in keys if k.cost_centre}}
    groups: dict[tuple[str | None, ...], _Sum] = {}
    total = _Sum()
    for group in _ledger(store, _fields(dims), since, until, flush):
        total.add(group)
        for key in _group_keys(group.fields, dims, centres):
            groups.setdefault(key, _Sum()).add(group)
    rows = tuple(groups[key].row(dict(zip(dims, key, strict=True))) for key in sorted(groups, key=_sort_key))
    expands = "tag" in dims
    return CostReport(dims, since, until, rows, total.row({}), expands, (_EXPANDS_NOTE,) if expands else ())


def chargeback_csv(report: CostReport) -> str:
    """The report as CSV: a header, one row per group, and a ``TOTAL`` row (every call counted once).

    Refuses a report grouped by ``tag``, where a call with two tags would be charged twice (group by ``tag:NAME``
    or ``cost_centre`` instead), and one without any dimension."""
    if report.expands:
        raise ValueError(f"a chargeback cannot group by 'tag': {_EXPANDS_NOTE}; group by tag:NAME or cost_centre")
    if not report.by:
        raise ValueError("a chargeback needs at least one dimension to charge (team, app, cost_centre, ...)")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*report.by, "calls", "input_tokens", "output_tokens", "cost_usd"])
    for row in report.rows:
        writer.writerow([*(_cell(row.group[d]) for d in report.by), *_amounts(row)])
    writer.writerow(["TOTAL", *([""] * (len(report.by) - 1)), *_amounts(report.total)])
    return out.getvalue()


@dataclass(frozen=True)
class BudgetStatus:
    """One budget against the ledger's spend in its current period (``[window_start, window_end)``, UTC).

    ``soft_crossed``: spend passed the soft budget (the gateway logs an alert). ``hard_reached``: spend reached the
    hard budget. The gateway refuses a call as soon as its worst-case cost would cross the budget, so callers can be
    refused a little before ``hard_reached`` is true."""

    limit: str
    scope: str
    value: str | None  # the key/user/team/app/tag charged; None for global or when nobody spent yet
    period: str
    window_start: datetime
    window_end: datetime
    budget_usd: float | None
    soft_budget_usd: float | None
    spent_usd: float
    calls: int
    remaining_usd: float | None
    share: float | None  # spent / budget (or / soft budget when there is no hard one)
    soft_crossed: bool
    hard_reached: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "scope": self.scope,
            "value": self.value,
            "period": self.period,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "budget_usd": self.budget_usd,
            "soft_budget_usd": self.soft_budget_usd,
            "spent_usd": self.spent_usd,
            "calls": self.calls,
            "remaining_usd": self.remaining_usd,
            "share": self.share,
            "soft_crossed": self.soft_crossed,
            "hard_reached": self.hard_reached,
        }


def budget_status(
    limits: Settings | Sequence[LimitConfig],
    store: Store,
    now: datetime | None = None,
    *,
    flush: Callable[[], None] | None = None,
) -> list[BudgetStatus]:
    """Every limit with a money budget (hard ``budget_usd`` or ``soft_budget_usd``), against what the ledger says
    was spent in its current period. A limit without a ``value`` holds for each key/user/team/app/tag separately,
    so it gets one status per value that spent in the period (one with ``value`` None when none did).

    ``limits``: the settings (``gateway.limits``) or the limits in force (``platform.gateway.limits.limits``, which
    also holds limits a runbook set at run time). The ledger is the record; the gateway enforces with its own
    counters, which also hold reservations of calls in flight."""
    configured = limits.gateway.limits if isinstance(limits, Settings) else list(limits)
    moment = _utc(now or datetime.now(UTC))
    statuses: list[BudgetStatus] = []
    windows: dict[str, tuple[datetime, datetime, list[_Group]]] = {}
    fields = {"key_name", "user", "team", "app", "tags"}
    for limit in configured:
        if limit.budget_usd is None and limit.soft_budget_usd is None:
            continue
        if limit.period not in windows:
            start, end = _window(limit.period, moment)
            windows[limit.period] = (start, end, list(_ledger(store, fields, start, end, flush)))
            flush = None  # drained once is enough
        start, end, groups = windows[limit.period]
        spent: dict[str | None, _Sum] = {}
        for group in groups:
            for value in _scope_values(group.fields, limit.scope):
                if limit.value is None or value == limit.value:
                    spent.setdefault(value, _Sum()).add(group)
        if not spent:
            spent[limit.value] = _Sum()
        for value, total in sorted(spent.items(), key=lambda item: (item[0] is None, item[0] or "")):
            statuses.append(_status(limit, value, start, end, total))
    return statuses


# ---- internals ------------------------------------------------------------------------------------------------


def _check_dimensions(by: Sequence[str]) -> tuple[str, ...]:
    dims = tuple(by)
    for dim in dims:
        if dim not in DIMENSIONS and not (dim.startswith("tag:") and len(dim) > 4):
            raise ValueError(f"cannot group by {dim!r}; choose from {', '.join(DIMENSIONS)} or tag:NAME")
    if len(set(dims)) != len(dims):
        raise ValueError(f"a dimension is named twice in {list(dims)}")
    return dims


def _period(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    since = _utc(since) if since is not None else None
    until = _utc(until) if until is not None else None
    if since is not None and until is not None and until <= since:
        raise ValueError(f"the period is empty: until ({until.isoformat()}) is not after since ({since.isoformat()})")
    return since, until


def _fields(dims: tuple[str, ...]) -> set[str]:
    """The ledger fields that decide the groups of ``dims``."""
    fields = {_COLUMN_OF.get(d, d) for d in dims if d in _COLUMN_OF or d in ("day", "month")}
    if any(d in ("tag", "cost_centre") or d.startswith("tag:") for d in dims):
        fields.add("tags")
    if "cost_centre" in dims:
        fields.add("key_name")
    return fields


def _ledger(
    store: Store, fields: set[str], since: datetime | None, until: datetime | None, flush: Callable[[], None] | None
) -> Iterator[_Group]:
    """The ledger's calls in ``[since, until)`` summed in the database per distinct value of ``fields`` (so a
    report reads one row per group, not per call; tags are grouped as their JSON text and parsed once per group)."""
    if flush is not None:
        flush()
    call = GatewayCallRow
    expressions: dict[str, Any] = {}
    for name in sorted(fields):
        if name in ("day", "month"):
            expressions[name] = _utc_date(store.engine.dialect.name, call.at, name)
        elif name == "tags":
            expressions[name] = cast(call.tags, Text)
        else:
            expressions[name] = getattr(call, name)
    sums = (func.count(), func.sum(call.input_tokens), func.sum(call.output_tokens), func.sum(call.cost_usd))
    query = select(*expressions.values(), *sums).group_by(*expressions.values())
    if since is not None:
        query = query.where(call.at >= since)
    if until is not None:
        query = query.where(call.at < until)
    with store.session() as session:
        for row in session.execute(query):
            values = dict(zip(expressions, row, strict=False))
            if "tags" in values:
                values["tags"] = list(dict.fromkeys(json.loads(values["tags"]) or [])) if values["tags"] else []
            calls, tokens_in, tokens_out, cost = row[len(expressions) :]
            yield _Group(values, int(calls), int(tokens_in or 0), int(tokens_out or 0), float(cost or 0.0))


def _utc_date(dialect: str, column: Any, period: str) -> Any:
    """The UTC day (``2026-11-03``) or month (``2026-11``) of a timestamp, in SQL. Formats are literals, not bound
    parameters, so the same expression in SELECT and GROUP BY is the same text to PostgreSQL."""
    if dialect == "postgresql":
        pattern = "'YYYY-MM-DD'" if period == "day" else "'YYYY-MM'"
        return func.to_char(func.timezone(literal_column("'UTC'"), column), literal_column(pattern))
    # SQLite keeps timestamps as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return func.substr(column, literal_column("1"), literal_column("10" if period == "day" else "7"))


def _group_keys(fields: dict[str, Any], dims: tuple[str, ...], centres: dict[str, str]) -> list[tuple[str | None, ...]]:
    """The group(s) calls count in: one, unless grouped by ``tag`` and the calls have several tags."""
    tags: list[str] = fields.get("tags", [])
    values = [_value(fields, dim, tags, centres) for dim in dims if dim != "tag"]
    if "tag" not in dims:
        return [tuple(values)]
    position = dims.index("tag")
    each: list[str | None] = [*tags] or [None]
    return [(*values[:position], tag, *values[position:]) for tag in each]


def _value(fields: dict[str, Any], dim: str, tags: list[str], centres: dict[str, str]) -> str | None:
    value: str | None
    if dim in _COLUMN_OF:
        value = fields[_COLUMN_OF[dim]]
    elif dim in ("day", "month"):
        value = fields[dim]
    elif dim == "cost_centre":
        value = centres.get(fields["key_name"]) or _tag_value(tags, _COST_CENTRE_TAGS)
    else:  # tag:NAME
        value = _tag_value(tags, (dim[4:],))
    return value


def _tag_value(tags: list[str], names: tuple[str, ...]) -> str | None:
    for tag in tags:
        name, sep, value = tag.partition(":")
        if sep and name in names and value:
            return value
    return None


def _sort_key(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for value in key)


def _cell(value: str | None) -> str:
    return "(none)" if value is None else value


def _amounts(row: CostRow) -> list[str]:
    return [str(row.calls), str(row.input_tokens), str(row.output_tokens), f"{row.cost_usd:.8f}"]


def _scope_values(fields: dict[str, Any], scope: str) -> list[str | None]:
    if scope == "global":
        return [None]
    if scope == "tag":
        return list(fields["tags"])
    value = fields["key_name" if scope == "key" else scope]
    return [value] if value else []


def _status(limit: LimitConfig, value: str | None, start: datetime, end: datetime, total: _Sum) -> BudgetStatus:
    spent = total.cost_usd
    budget, soft = limit.budget_usd, limit.soft_budget_usd
    reference = budget if budget is not None else soft
    return BudgetStatus(
        limit=limit.name,
        scope=limit.scope,
        value=value,
        period=limit.period,
        window_start=start,
        window_end=end,
        budget_usd=budget,
        soft_budget_usd=soft,
        spent_usd=spent,
        calls=total.calls,
        remaining_usd=max(budget - spent, 0.0) if budget is not None else None,
        share=spent / reference if reference else None,
        # As the gateway decides: a soft alert once spend passes the soft budget; refusals once a call would cross
        # the hard one, so a budget spent to the cent is reached.
        soft_crossed=soft is not None and spent > soft,
        hard_reached=budget is not None and spent >= budget,
    )


def _window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar window holding ``now``, the same windows the gateway's limit counters use."""
    if period == "minute":
        start = now.replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    if period == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    first = date(now.year, now.month, 1)
    following = date(now.year + (now.month == 12), now.month % 12 + 1, 1)
    return datetime(first.year, first.month, 1, tzinfo=UTC), datetime(following.year, following.month, 1, tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones; callers may pass either."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
