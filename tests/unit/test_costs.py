"""Cost allocation on SQLite and PostgreSQL: spend from the call ledger by team, app, user, key, model, tag, tag:NAME,
cost centre, day and month (sums checked by hand on ledger rows with exact binary costs), the chargeback CSV read
back with the csv module, budgets against spend, real gateway calls attributed through API keys, the REST API and
the CLI."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from llmops import ModelConfig, Platform, Settings
from llmops._settings import ApiKeyConfig, GatewaySettings, LimitConfig
from llmops.gateway import ChatRequest, LimitExceededError, identify
from llmops.gateway._tables import GatewayCallRow
from llmops.governance._costs import budget_status, chargeback_csv, cost_report, parse_moment
from llmops.server import create_app
from llmops.store import Store
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL

KEYS = [
    ApiKeyConfig(name="k-support", sha256="a" * 64, team="support", cost_centre="CC-1"),
    ApiKeyConfig(name="k-research", sha256="b" * 64, team="research"),
]

# (id, at, key, user, team, app, served_by, tags, input tokens, output tokens, cost): costs are exact in binary.
CALLS = [
    ("c1", "2026-10-31T23:59:59", "k-support", "u1", "support", "helpdesk", "m", ["cs", "env:prod"], 100, 10, 0.5),
    ("c2", "2026-11-01T00:00:00", "k-support", "u1", "support", "helpdesk", "m", ["cs", "env:prod"], 200, 20, 1.25),
    ("c3", "2026-11-15T10:00:00", "k-support", "u2", "support", "helpdesk", "big", ["cs", "cost_centre:CC-9"], 300, 30,
     2.0),
    ("c4", "2026-11-30T23:59:59", "k-research", "u3", "research", "notebook", "m", ["cost_centre:CC-2", "env:dev"], 400,
     40, 0.25),
    ("c5", "2026-12-01T00:00:00", "k-research", "u3", "research", "notebook", "big",
     ["cost_centre:CC-2", "cost_centre:CC-3"], 500, 50, 4.0),
    ("c6", "2026-12-02T08:00:00", None, "u4", None, None, "m", ["cost-centre:CC-7", "cost_centre:CC-8"], 600, 60,
     0.125),
    ("c7", "2026-12-02T09:00:00", None, None, None, None, "m", [], 10, 1, 0.0),
]  # fmt: skip
TOTAL = 8.125


def _row(call: tuple[Any, ...]) -> GatewayCallRow:
    id_, at, key, user, team, app, model, tags, tokens_in, tokens_out, cost = call
    return GatewayCallRow(
        id=id_, request_id="req_" + id_, at=datetime.fromisoformat(at).replace(tzinfo=UTC), model=model,
        served_by=model, upstream_model=model, provider="scripted", key_name=key, user=user, team=team, app=app,
        tags=tags, input_tokens=tokens_in, output_tokens=tokens_out, cached_input_tokens=0, cost_usd=cost,
        price_book="test", status="ok" if cost else "error", cache_hit=None, latency_ms=1.0, ttft_ms=None, attempts=1,
        fallbacks=[], route={},
    )  # fmt: skip


@pytest.fixture
def ledger(database_url: str) -> Iterator[Store]:
    """A migrated store whose ledger holds ``CALLS``."""
    store = Store(database_url)
    store.migrate()
    with store.session() as session:
        session.add_all(_row(call) for call in CALLS)
    yield store
    store.close()


def _sums(store: Store, by: list[str], **kwargs: Any) -> dict[tuple[str | None, ...], tuple[int, float]]:
    report = cost_report(store, by=by, keys=KEYS, **kwargs)
    return {tuple(row.group[d] for d in by): (row.calls, row.cost_usd) for row in report.rows}


def test_spend_by_each_attribution_adds_up_to_the_ledger(ledger: Store) -> None:
    assert _sums(ledger, ["team"]) == {("research",): (2, 4.25), ("support",): (3, 3.75), (None,): (2, 0.125)}
    assert _sums(ledger, ["app"]) == {("helpdesk",): (3, 3.75), ("notebook",): (2, 4.25), (None,): (2, 0.125)}
    assert _sums(ledger, ["user"]) == {("u1",): (2, 1.75), ("u2",): (1, 2.0), ("u3",): (2, 4.25), ("u4",): (1, 0.125),
                                       (None,): (1, 0.0)}  # fmt: skip
    assert _sums(ledger, ["key"]) == {("k-research",): (2, 4.25), ("k-support",): (3, 3.75), (None,): (2, 0.125)}
    assert _sums(ledger, ["model"]) == {("big",): (2, 6.0), ("m",): (5, 2.125)}
    assert _sums(ledger, ["month"]) == {("2026-10",): (1, 0.5), ("2026-11",): (3, 3.5), ("2026-12",): (3, 4.125)}
    assert _sums(ledger, ["team", "month"]) == {
        ("research", "2026-11"): (1, 0.25), ("research", "2026-12"): (1, 4.0), ("support", "2026-10"): (1, 0.5),
        ("support", "2026-11"): (2, 3.25), (None, "2026-12"): (2, 0.125),
    }  # fmt: skip
    report = cost_report(ledger, by=["team", "month"])
    assert [tuple(r.group.values()) for r in report.rows][:2] == [("research", "2026-11"), ("research", "2026-12")]
    total = report.total
    assert (total.calls, total.input_tokens, total.output_tokens, total.cost_usd) == (7, 2110, 211, TOTAL)
    assert not report.expands and report.notes == ()
    support = next(r for r in report.rows if r.group == {"team": "support", "month": "2026-11"})
    assert (support.input_tokens, support.output_tokens) == (500, 50)


def test_periods_are_half_open_in_utc(ledger: Store) -> None:
    since, until = parse_moment("2026-11"), parse_moment("2026-12-01")
    assert since == datetime(2026, 11, 1, tzinfo=UTC) and until == datetime(2026, 12, 1, tzinfo=UTC)
    # c1 is a second before the start, c2 exactly on it, c5 exactly on the (exclusive) end.
    assert _sums(ledger, ["day"], since=since, until=until) == {
        ("2026-11-01",): (1, 1.25), ("2026-11-15",): (1, 2.0), ("2026-11-30",): (1, 0.25)
    }  # fmt: skip
    berlin = parse_moment("2026-11-01T01:00:00+01:00")  # the same moment as midnight UTC
    assert cost_report(ledger, by=[], since=berlin, until=until).total.cost_usd == 3.5
    with pytest.raises(ValueError, match="the period is empty"):
        cost_report(ledger, by=["team"], since=until, until=since)
    with pytest.raises(ValueError, match="is not a date"):
        parse_moment("November")


def test_tags_expand_and_say_so_while_tag_values_and_cost_centres_partition(ledger: Store) -> None:
    by_tag = cost_report(ledger, by=["tag"])
    assert {r.group["tag"]: (r.calls, r.cost_usd) for r in by_tag.rows} == {
        "cs": (3, 3.75), "env:prod": (2, 1.75), "cost_centre:CC-9": (1, 2.0), "cost_centre:CC-2": (2, 4.25),
        "env:dev": (1, 0.25), "cost_centre:CC-3": (1, 4.0), "cost-centre:CC-7": (1, 0.125),
        "cost_centre:CC-8": (1, 0.125), None: (1, 0.0),
    }  # fmt: skip
    assert by_tag.expands and sum(r.cost_usd for r in by_tag.rows) > by_tag.total.cost_usd == TOTAL
    assert "may exceed the grand total" in by_tag.notes[0]
    assert _sums(ledger, ["tag:env"]) == {("dev",): (1, 0.25), ("prod",): (2, 1.75), (None,): (4, 6.125)}
    # The key's configured cost centre wins over a tag (c3); otherwise the first cost-centre tag in any spelling.
    assert _sums(ledger, ["cost_centre"]) == {("CC-1",): (3, 3.75), ("CC-2",): (2, 4.25), ("CC-7",): (1, 0.125),
                                              (None,): (1, 0.0)}  # fmt: skip
    without_keys = cost_report(ledger, by=["cost_centre"])  # the keys' settings not given: tags alone decide
    assert {r.group["cost_centre"]: r.cost_usd for r in without_keys.rows}["CC-9"] == 2.0
    with pytest.raises(ValueError, match="cannot group by 'colour'"):
        cost_report(ledger, by=["colour"])
    with pytest.raises(ValueError, match="named twice"):
        cost_report(ledger, by=["team", "team"])


def test_the_chargeback_csv_reads_back_and_its_total_matches(ledger: Store) -> None:
    report = cost_report(ledger, by=["month", "cost_centre"], keys=KEYS)
    rows = list(csv.DictReader(io.StringIO(chargeback_csv(report))))
    assert list(rows[0]) == ["month", "cost_centre", "calls", "input_tokens", "output_tokens", "cost_usd"]
    *groups, total = rows
    assert total["month"] == "TOTAL" and total["cost_centre"] == ""
    assert int(total["calls"]) == 7 and int(total["input_tokens"]) == 2110 and float(total["cost_usd"]) == TOTAL
    assert sum(float(r["cost_usd"]) for r in groups) == TOTAL and sum(int(r["calls"]) for r in groups) == 7
    assert {(r["month"], r["cost_centre"]): float(r["cost_usd"]) for r in groups} == {
        ("2026-10", "CC-1"): 0.5, ("2026-11", "CC-1"): 3.25, ("2026-11", "CC-2"): 0.25, ("2026-12", "CC-2"): 4.0,
        ("2026-12", "CC-7"): 0.125, ("2026-12", "(none)"): 0.0,
    }  # fmt: skip
    with pytest.raises(ValueError, match="cannot group by 'tag'"):
        chargeback_csv(cost_report(ledger, by=["tag"]))


def test_budgets_report_spend_in_their_current_period(ledger: Store) -> None:
    limits = [
        LimitConfig(name="support-monthly", scope="team", value="support", budget_usd=3.0, soft_budget_usd=1.0,
                    period="month"),
        LimitConfig(name="per-team", scope="team", budget_usd=10.0, period="month"),
        LimitConfig(name="cs-daily", scope="tag", value="cs", soft_budget_usd=5.0, period="day"),
        LimitConfig(name="everyone", scope="global", budget_usd=100.0, soft_budget_usd=1.5, period="day"),
        LimitConfig(name="rate-only", scope="team", requests_per_minute=10),
    ]  # fmt: skip
    now = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
    statuses = {(s.limit, s.value): s for s in budget_status(limits, ledger, now)}
    assert set(statuses) == {("support-monthly", "support"), ("per-team", "research"), ("per-team", "support"),
                             ("cs-daily", "cs"), ("everyone", None)}  # fmt: skip
    support = statuses["support-monthly", "support"]
    assert (support.spent_usd, support.calls, support.remaining_usd) == (3.25, 2, 0.0)  # c2 and c3 in November
    assert support.share == pytest.approx(3.25 / 3) and support.soft_crossed and support.hard_reached
    assert support.window_start == datetime(2026, 11, 1, tzinfo=UTC) == parse_moment("2026-11")
    assert support.window_end == datetime(2026, 12, 1, tzinfo=UTC)
    research = statuses["per-team", "research"]
    assert (research.spent_usd, research.remaining_usd, research.soft_crossed, research.hard_reached) == (
        0.25, 9.75, False, False)  # fmt: skip
    cs = statuses["cs-daily", "cs"]  # c3 on the 15th
    assert (cs.spent_usd, cs.remaining_usd, cs.share, cs.soft_crossed) == (2.0, None, 0.4, False)
    everyone = statuses["everyone", None]
    assert (everyone.spent_usd, everyone.soft_crossed, everyone.hard_reached) == (2.0, True, False)
    quiet = budget_status(limits[2:3], ledger, datetime(2026, 11, 20, tzinfo=UTC))
    assert [(s.value, s.spent_usd, s.calls, s.soft_crossed) for s in quiet] == [("cs", 0.0, 0, False)]
    december = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    year_end = budget_status(limits[:1], ledger, december)[0]
    assert (year_end.spent_usd, year_end.window_end) == (0.0, datetime(2027, 1, 1, tzinfo=UTC))
    assert budget_status(Settings(gateway=GatewaySettings(limits=limits)), ledger, now)[0].spent_usd == 3.25


# ---- through real gateway calls --------------------------------------------------------------------------------

KEY = "sk-llmops-" + "c" * 24


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _priced_platform(tmp_path: Path, database_url: str) -> Platform:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        rag_apps=[],
        models=[ModelConfig(name="m", provider="scripted", input_price_per_mtok=100.0, output_price_per_mtok=400.0)],
        gateway=GatewaySettings(
            cache=False,
            api_keys=[ApiKeyConfig(name="support-bot", sha256=_sha(KEY), team="support", app="helpdesk",
                                   tags=["env:prod"], cost_centre="CC-42")],
            limits=[LimitConfig(name="support-daily", scope="team", value="support", budget_usd=0.01,
                                soft_budget_usd=0.002, period="day")],
        ),
    )  # fmt: skip
    return Platform(settings, embedder=HashEmbedder(), providers={"m": ScriptedProvider("one two three four")})


def test_gateway_calls_are_attributed_through_keys_and_request_tags(tmp_path: Path, database_url: str) -> None:
    platform = _priced_platform(tmp_path, database_url)
    keys = platform.settings.gateway.api_keys
    by_key = identify(KEY, keys, require_key=False, user="ana", metadata={"tags": "ticket:T-1"})
    anonymous = identify(None, keys, require_key=False, metadata={"team": "research", "tags": "cost_centre:CC-7"})
    assert by_key.tags == ("env:prod", "ticket:T-1")

    async def run() -> int:
        served = 0
        try:
            for n in range(3):
                request = ChatRequest(model="m", messages=[{"role": "user", "content": f"question {n}"}])
                await platform.gateway.complete(request, caller=anonymous)
            for n in range(200):
                request = ChatRequest(model="m", messages=[{"role": "user", "content": f"q {n}"}], max_tokens=8)
                await platform.gateway.complete(request, caller=by_key)
                served += 1
        except LimitExceededError:
            return served
        finally:
            await platform.gateway.aclose()
        raise AssertionError("the budget never refused a call")

    served = asyncio.run(run())
    calls = platform.ledger.calls()  # drains the journal
    spent = {team: sum(c["cost_usd"] for c in calls if c["team"] == team) for team in ("support", "research")}
    assert spent["support"] > 0 and spent["research"] > 0
    report = cost_report(platform.store, by=["cost_centre", "user"], keys=keys, flush=platform.journal.flush)
    got = {tuple(r.group.values()): (r.calls, r.cost_usd) for r in report.rows}
    # The refused call is in the ledger at no cost, attributed like the others.
    assert got == {("CC-42", "ana"): (served + 1, pytest.approx(spent["support"])),
                   ("CC-7", None): (3, pytest.approx(spent["research"]))}  # fmt: skip
    assert report.total.cost_usd == pytest.approx(sum(c["cost_usd"] for c in calls))
    [today] = cost_report(platform.store, by=["day"]).rows  # journalled timestamps group by their UTC day
    assert today.group == {"day": datetime.now(UTC).strftime("%Y-%m-%d")} and today.calls == len(calls)
    by_tag = {r.group["tag:ticket"]: r.calls for r in cost_report(platform.store, by=["tag:ticket"]).rows}
    assert by_tag == {"T-1": served + 1, None: 3}

    [status] = budget_status(platform.gateway.limits.limits, platform.store, flush=platform.journal.flush)
    assert (status.limit, status.value, status.calls) == ("support-daily", "support", served + 1)
    assert status.spent_usd == pytest.approx(spent["support"]) and status.soft_crossed
    assert status.remaining_usd == pytest.approx(max(0.01 - spent["support"], 0.0))
    # The gateway refuses a call whose worst case would cross the budget: what was spent stays within it.
    assert (
        status.spent_usd <= 0.01 and not status.hard_reached and status.share == pytest.approx(spent["support"] / 0.01)
    )
    platform.close()


# ---- REST API and CLI --------------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, Platform]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        rag_apps=[],
        gateway=GatewaySettings(api_keys=KEYS, limits=[
            LimitConfig(name="support-monthly", scope="team", value="support", budget_usd=3.0, period="month")]),
    )  # fmt: skip
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("ok")})
    with platform.store.session() as session:
        session.add_all(_row(call) for call in CALLS)
    with TestClient(create_app(platform)) as client:
        yield client, platform
    platform.close()


def test_the_rest_api(api: tuple[TestClient, Platform]) -> None:
    client, platform = api
    body = client.get("/api/costs", params={"by": ["team", "month"], "since": "2026-11", "until": "2026-12"}).json()
    assert body["by"] == ["team", "month"] and body["total"]["cost_usd"] == 3.5 and not body["expands"]
    assert body["rows"] == [
        {"team": "research", "month": "2026-11", "calls": 1, "input_tokens": 400, "output_tokens": 40,
         "cost_usd": 0.25},
        {"team": "support", "month": "2026-11", "calls": 2, "input_tokens": 500, "output_tokens": 50, "cost_usd": 3.25},
    ]  # fmt: skip
    assert client.get("/api/costs", params={"by": "tag"}).json()["expands"] is True
    refused = client.get("/api/costs", params={"by": "colour"})
    assert refused.status_code == 422 and "cannot group by 'colour'" in refused.json()["detail"]
    assert client.get("/api/costs", params={"since": "soon"}).status_code == 422

    csv_response = client.get("/api/costs/chargeback.csv", params={"by": "cost_centre", "period": "none"})
    assert csv_response.status_code == 200 and csv_response.headers["content-type"].startswith("text/csv")
    assert 'filename="chargeback-cost_centre.csv"' in csv_response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_response.text)))
    assert [(r["cost_centre"], float(r["cost_usd"])) for r in rows] == [
        ("CC-1", 3.75), ("CC-2", 4.25), ("CC-7", 0.125), ("(none)", 0.0), ("TOTAL", TOTAL)]  # fmt: skip
    assert client.get("/api/costs/chargeback.csv", params={"by": "tag"}).status_code == 422

    budgets = client.get("/api/costs/budgets").json()["budgets"]
    assert [(b["limit"], b["value"], b["budget_usd"]) for b in budgets] == [("support-monthly", "support", 3.0)]
    window = (parse_moment(budgets[0]["window_start"]), parse_moment(budgets[0]["window_end"]))
    this_month = cost_report(platform.store, by=["team"], since=window[0], until=window[1])
    expected = sum(r.cost_usd for r in this_month.rows if r.group["team"] == "support")
    assert budgets[0]["spent_usd"] == expected and budgets[0]["window_start"].endswith("-01T00:00:00+00:00")


def test_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from llmops.cli._costs import costs_app

    database = f"sqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "llmops.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "database_url": database, "rag_apps": [],
        "gateway": {"api_keys": [k.model_dump() for k in KEYS],
                    "limits": [{"name": "cs-daily", "scope": "tag", "value": "cs", "soft_budget_usd": 5.0}]},
    }))  # fmt: skip
    monkeypatch.setenv("LLMOPS_CONFIG", str(config))
    store = Store(database)
    store.migrate()
    with store.session() as session:
        session.add_all(_row(call) for call in CALLS)
    store.close()
    runner = CliRunner()

    shown = runner.invoke(costs_app, ["report", "--by", "team", "--by", "month", "--since", "2026-11-01", "--json"])
    assert shown.exit_code == 0, shown.output
    assert '"total"' in shown.output and "3.25" in shown.output and "2026-10" not in shown.output
    table = runner.invoke(costs_app, ["report", "--by", "tag"])
    assert table.exit_code == 0 and "env:prod" in table.output and "may exceed the grand total" in table.output
    out = tmp_path / "chargeback.csv"
    written = runner.invoke(costs_app, ["chargeback", "--by", "team", "--period", "month", "-o", str(out)])
    assert written.exit_code == 0, written.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows[-1]["month"] == "TOTAL" and float(rows[-1]["cost_usd"]) == TOTAL
    assert sum(float(r["cost_usd"]) for r in rows[:-1]) == TOTAL and len(rows) == 6
    refused = runner.invoke(costs_app, ["chargeback", "--by", "tag"])
    assert refused.exit_code == 1 and "cannot group by 'tag'" in refused.output
    budgets = runner.invoke(costs_app, ["budgets"])
    assert budgets.exit_code == 0 and "cs-daily" in budgets.output and "tag cs" in budgets.output
