"""The closed loop on fakes: request metrics, sampling, feedback, trigger rules and actions, approvals, runbooks,
webhooks, and the audit log that records all of it."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from llmops import Platform, Settings
from llmops.governance import AuditLog
from llmops.loop import FeedbackError, RuleError, RunbookError, UnknownRequestError
from llmops.prompts import DEFAULT_RAG_PROMPT_NAME
from llmops.store import Store
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL, SAMPLES

QUESTION = "How many paid time off PTO days do new employees get?"


def _ask(platform: Platform, question: str = QUESTION) -> str:
    return asyncio.run(platform.rag().ask(question)).request_id


# ---- audit log ------------------------------------------------------------------------------------------------------


def _audit_with_entries(database_url: str) -> tuple[Store, AuditLog]:
    store = Store(database_url)
    store.migrate()
    audit = AuditLog(store)
    for n in range(5):
        audit.record("alice", "prompt.label.move", "prompt_label", f"p/dev/production-{n}", after={"version": n})
    assert audit.verify().ok
    return store, audit


def test_audit_verify_catches_an_edited_entry(database_url: str) -> None:
    store, audit = _audit_with_entries(database_url)
    with store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"))
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 3 and "edited" in (result.problem or "")
    store.close()


def test_audit_verify_catches_a_deleted_entry(database_url: str) -> None:
    store, audit = _audit_with_entries(database_url)
    with store.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM audit_log WHERE seq = 2"))
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 2 and "missing" in (result.problem or "")
    store.close()


def test_audit_verify_catches_reordered_entries(database_url: str) -> None:
    store, audit = _audit_with_entries(database_url)
    with store.engine.begin() as connection:  # swap entries 2 and 4 (content moves, numbering stays gapless)
        connection.execute(sa.text("UPDATE audit_log SET seq = -2 WHERE seq = 2"))
        connection.execute(sa.text("UPDATE audit_log SET seq = 2 WHERE seq = 4"))
        connection.execute(sa.text("UPDATE audit_log SET seq = 4 WHERE seq = -2"))
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 2
    store.close()


def test_concurrent_audit_writers_keep_one_chain(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    audit = AuditLog(store)
    # Two writers per log (they take turns) and two logs (as two replicas would: they race for numbers and retry).
    logs = [audit, AuditLog(store)]
    threads = [
        threading.Thread(target=lambda i=i: [logs[i % 2].record(f"u{i}", "x", "t", str(n)) for n in range(10)])
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = audit.verify()
    assert result.ok and result.entries == 40
    store.close()


# ---- request metrics, sampling, feedback ---------------------------------------------------------------------------


def test_every_request_gets_a_metrics_row_with_its_dimensions(ingested: Platform) -> None:
    request_id = _ask(ingested)
    value = ingested.request_metrics.value("requests", app="handbook-rag")
    assert value.value == 1.0
    series = ingested.request_metrics.series(
        "cost_usd", window_s=600, bucket_s=60, group_by="prompt_version", where={"kind": "rag"}
    )
    assert [p["group"] for p in series] == [1]
    trace = ingested.traces.get(request_id)
    assert trace["attributes"]["llmops.prompt.version"] == 1


def test_sampled_out_traces_keep_metrics_and_come_back_on_negative_feedback(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", observability={"sample_rate": 0.0})
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("15 days [1].")})
    try:
        corpus = tmp_path / "corpus"
        shutil.copytree(SAMPLES, corpus)
        platform.knowledge.ingest(corpus)
        first, second = _ask(platform), _ask(platform)
        assert platform.request_metrics.value("requests", app="handbook-rag").count == 2
        with pytest.raises(LookupError):
            platform.traces.get(first)
        platform.feedback.record(first, kind="thumbs", value="down", comment="wrong")
        platform.feedback.record(second, kind="thumbs", value="up")
        assert platform.traces.get(first)["request_id"] == first  # kept because of the thumbs down
        with pytest.raises(LookupError):
            platform.traces.get(second)
        assert platform.request_metrics.value("thumbs_down_rate").value == 0.5
        assert platform.feedback.negative_request_ids() == [first]
    finally:
        platform.close()


def test_feedback_is_validated_and_needs_a_served_request(ingested: Platform) -> None:
    request_id = _ask(ingested)
    for kwargs, problem in [
        ({"kind": "stars", "value": 3}, "unknown feedback kind"),
        ({"kind": "thumbs", "value": "sideways"}, "'up' or 'down'"),
        ({"kind": "rating", "value": 9}, "from 1 to 5"),
        ({"kind": "correction"}, "needs the corrected answer"),
        ({"kind": "flag"}, "needs a 'flag'"),
        ({"kind": "thumbs", "value": "up", "comment": "x" * 10_001}, "at most 10000"),
    ]:
        with pytest.raises(FeedbackError, match=problem):
            ingested.feedback.record(request_id, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UnknownRequestError):
        ingested.feedback.record("req_nope", kind="thumbs", value="up")
    saved = ingested.feedback.record(request_id, kind="correction", correction="New employees get 15 days.")
    assert saved.negative and saved.trace_id == ingested.traces.get(request_id)["trace_id"]
    assert [f.id for f in ingested.feedback.find(request_id=request_id)] == [saved.id]


# ---- triggers and actions ------------------------------------------------------------------------------------------


def _second_prompt_version(platform: Platform) -> int:
    current = platform.prompts.get(DEFAULT_RAG_PROMPT_NAME, label="production")
    messages = [dict(m) for m in current.messages]
    messages[0]["content"] += "\nAnswer briefly."
    version = platform.prompts.create(DEFAULT_RAG_PROMPT_NAME, messages, author="alice", commit_message="shorter")
    platform.prompts.move_label(DEFAULT_RAG_PROMPT_NAME, "production", version.version, by="alice")
    return version.version


def test_a_metric_rule_fires_acts_rests_and_is_recorded(ingested: Platform) -> None:
    new = _second_prompt_version(ingested)
    _ask(ingested)
    ingested.triggers.add_rule(
        {
            "name": "slow-answers",
            "when": {"metric": "requests", "app": "handbook-rag", "window_s": 600, "op": ">=", "threshold": 1},
            "cooldown_s": 3600,
            "actions": [
                {"rollback_prompt": {"prompt": DEFAULT_RAG_PROMPT_NAME, "label": "production"}},
                {"open_review": {"title": "rolled back"}},
            ],
        },
        by="alice",
    )
    (firing,) = ingested.triggers.evaluate()
    assert firing["status"] == "acted" and firing["inputs"]["value"] == 1.0
    assert [a["status"] for a in firing["actions"]] == ["done", "done"]
    assert firing["actions"][0]["result"] == {
        "prompt": DEFAULT_RAG_PROMPT_NAME, "label": "production", "from_version": new, "to_version": 1,
    }  # fmt: skip
    assert ingested.prompts.labels(DEFAULT_RAG_PROMPT_NAME)["production"] == 1
    assert ingested.reviews.list()[0]["firing_id"] == firing["id"]
    assert ingested.triggers.evaluate() == []  # cooling down
    actions = [e["action"] for e in ingested.audit.entries()]
    for expected in ("trigger.rule.save", "trigger.fire", "prompt.label.rollback", "action.rollback_prompt"):
        assert expected in actions
    assert ingested.audit.verify().ok
    spans = [s["name"] for s in ingested.traces.get(firing["id"])["spans"]]
    assert spans == ["trigger slow-answers", "action rollback_prompt", "action open_review"]


def test_production_changes_wait_for_an_approver(ingested: Platform) -> None:
    _second_prompt_version(ingested)
    _ask(ingested)
    ingested.triggers.add_rule(
        {
            "name": "needs-approval",
            "when": {"metric": "requests", "op": ">=", "threshold": 1},
            "approval": True,
            "actions": [{"alert": {"message": "about to roll back"}},
                        {"rollback_prompt": {"prompt": DEFAULT_RAG_PROMPT_NAME}}],
        },
        by="alice",
    )  # fmt: skip
    (firing,) = ingested.triggers.evaluate()
    assert firing["status"] == "pending_approval"
    assert [a["status"] for a in firing["actions"]] == ["done", "pending_approval"]
    assert ingested.prompts.labels(DEFAULT_RAG_PROMPT_NAME)["production"] == 2
    with pytest.raises(PermissionError):
        ingested.triggers.approve(firing["id"], by="bob")
    ingested.roles.grant("carol", "approver", by="admin")
    approved = ingested.triggers.approve(firing["id"], by="carol")
    assert approved["status"] == "acted" and approved["actions"][1]["decided_by"] == "carol"
    assert ingested.prompts.labels(DEFAULT_RAG_PROMPT_NAME)["production"] == 1
    with pytest.raises(ValueError, match="not waiting"):
        ingested.triggers.approve(firing["id"], by="carol")


def test_bad_rules_are_refused_with_the_reason(ingested: Platform) -> None:
    engine = ingested.triggers
    cases = [
        ({"name": "x", "when": {"metric": "requests", "op": "<"}, "actions": [{"alert": {"message": "m"}}]},
         "threshold"),
        ({"name": "x", "when": {"metric": "requests", "op": "<", "threshold": 1}, "actions": [{"explode": {}}]},
         "unknown action 'explode'"),
        ({"name": "x", "when": {"metric": "requests", "op": "<", "threshold": 1},
          "actions": [{"rollback_prompt": {"prompt": "p", "lable": "x"}}]}, "lable"),
        ({"name": "x", "when": {"metric": "requests", "op": "<", "threshold": 1}, "actions": []}, "actions"),
    ]  # fmt: skip
    for spec, problem in cases:
        with pytest.raises(RuleError, match=problem):
            engine.add_rule(spec, by="alice")
    assert engine.rules() == []


def test_feedback_and_guardrail_events_fire_event_rules(ingested: Platform) -> None:
    request_id = _ask(ingested)
    ingested.triggers.add_rule(
        {"name": "flags", "when": {"event": "feedback", "match": {"flag": "harmful"}, "count": 1},
         "actions": [{"add_to_dataset": {"dataset": "flagged", "negative_feedback": True}}]},
        by="alice",
    )  # fmt: skip
    assert ingested.triggers.evaluate() == []
    ingested.feedback.record(request_id, kind="flag", flag="harmful")
    (firing,) = ingested.triggers.evaluate()
    assert firing["actions"][0]["result"] == {"dataset": "flagged", "drafts": 1}
    assert ingested.datasets.drafts("flagged")[0].example.metadata["request_id"] == request_id


def test_a_changed_source_fires_a_reindex(ingested: Platform, tmp_path: Path) -> None:
    corpus = str((tmp_path / "corpus").resolve())
    ingested.triggers.add_rule(
        {
            "name": "docs",
            "when": {"source_changed": corpus},
            "cooldown_s": 0,
            "actions": [{"reindex": {"source": corpus}}],
        },
        by="alice",
    )
    assert ingested.triggers.evaluate() == []
    before = ingested.knowledge.snapshot_id
    (tmp_path / "corpus" / "travel.md").write_text("# Travel\n\nBook flights through the travel desk.\n")
    (firing,) = ingested.triggers.evaluate()
    assert firing["inputs"]["changes"]["new"][0].endswith("travel.md")
    assert firing["actions"][0]["result"]["added"] == 1
    assert ingested.knowledge.snapshot_id != before
    assert ingested.triggers.evaluate() == []  # nothing pending any more


# ---- runbooks and webhooks -----------------------------------------------------------------------------------------


def test_runbooks_fail_over_throttle_and_check_their_parameters(ingested: Platform) -> None:
    firing = ingested.run_runbook("provider-outage", {"model": LOCAL_MODEL, "seconds": 60}, by="oncall")
    assert firing["status"] == "acted"
    assert ingested.gateway.breaker(LOCAL_MODEL).state == "open"
    firing = ingested.run_runbook(
        "cost-spike", {"scope": "user", "value": "bob", "requests_per_minute": 2}, by="oncall"
    )
    assert firing["status"] == "acted"
    assert any(limit.name == "throttle-user-bob" for limit in ingested.gateway.limits.limits)
    with pytest.raises(RunbookError, match="needs model"):
        ingested.run_runbook("provider-outage", {}, by="oncall")
    with pytest.raises(RunbookError, match="no parameter"):
        ingested.run_runbook("cost-spike", {"colour": "red"}, by="oncall")
    with pytest.raises(LookupError):
        ingested.run_runbook("nope", {}, by="oncall")
    audit = [e["action"] for e in ingested.audit.entries()]
    assert "gateway.model.fail_over" in audit and "gateway.limit.set" in audit


def test_a_failed_check_stops_a_runbook(ingested: Platform) -> None:
    from llmops.loop import Step

    firing = ingested.triggers.run(
        "manual",
        [
            Step("check", {"metric": "requests", "app": "handbook-rag", "op": ">=", "threshold": 1}),
            Step("alert", {"message": "m"}),
        ],
        {},
        source="manual",
        actor="oncall",
    )
    assert firing["status"] == "check_failed"  # the app has served no request
    assert [a["status"] for a in firing["actions"]] == ["check_failed", "skipped"]


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_webhooks_call_only_allowlisted_urls(tmp_path: Path, webhook_server: tuple[str, list[bytes]]) -> None:
    url, received = webhook_server
    settings = Settings(data_dir=tmp_path / "data", triggers={"webhook_allowlist": [url]})
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("x")})
    try:
        ok = platform.triggers.run("manual", [_step("webhook", url=url, message="hello")], {}, source="manual",
                                   actor="oncall")  # fmt: skip
        assert ok["status"] == "acted" and b'"hello"' in received[0]
        for refused in ("http://169.254.169.254/latest/meta-data", url.replace("/hook", "/other")):
            failed = platform.triggers.run("manual", [_step("webhook", url=refused)], {}, source="manual",
                                           actor="oncall")  # fmt: skip
            assert failed["status"] == "failed"
            assert "not on triggers.webhook_allowlist" in failed["actions"][0]["result"]["error"]
        assert len(received) == 1
    finally:
        platform.close()


def _step(action: str, **params: object) -> object:
    from llmops.loop import Step

    return Step(action, dict(params))


def test_an_ingestion_run_is_traced_with_what_it_did(ingested: Platform) -> None:
    (run,) = [t for t in ingested.traces.recent(50) if t["name"] == "ingest"]
    trace = ingested.traces.get(run["request_id"])
    attributes = trace["attributes"]
    assert attributes["llmops.ingest.added"] == 6 and attributes["llmops.ingest.chunks_written"] > 0
    assert attributes["llmops.index.snapshot"] == ingested.knowledge.snapshot_id
    assert [s["name"] for s in trace["spans"]] == ["ingest", "index.catch_up"]


def test_drift_observations_are_stored_without_personal_data(sqlite_platform: Platform) -> None:
    from llmops.observability._tables import DriftObservationRow

    sqlite_platform.drift.observe("req_1", "handbook-rag", "I am jane.doe@example.com, how do I reset my password?")
    sqlite_platform.drift.flush()
    with sqlite_platform.store.session() as session:
        (row,) = session.scalars(sa.select(DriftObservationRow)).all()
    assert "jane.doe@example.com" not in row.question and "reset my password" in row.question


def test_a_drift_rule_waits_for_enough_questions(sqlite_platform: Platform) -> None:
    sqlite_platform.triggers.add_rule(
        {"name": "drift", "when": {"drift": "handbook-rag"}, "actions": [{"alert": {"message": "drift"}}]}, by="a"
    )
    assert sqlite_platform.triggers.evaluate() == []
    assert sqlite_platform.check_drift("handbook-rag") is None  # not enough observed questions, cached meanwhile


def test_the_feedback_sdk_and_api_over_http(ingested: Platform) -> None:
    from llmops.loop import FeedbackClient
    from llmops.server import create_app

    from ..helpers import serve_in_thread

    request_id = _ask(ingested)
    with serve_in_thread(create_app(ingested)) as base:
        client = FeedbackClient(base)
        assert client.thumbs(request_id, up=False, comment="wrong")["negative"] is True
        assert client.rate(request_id, 4)["value"] == 4.0
        with pytest.raises(FeedbackError, match="from 1 to 5"):
            client.rate(request_id, 7)
        with pytest.raises(UnknownRequestError):
            client.flag("req_missing", "harmful")
        client.close()
        import httpx

        listed = httpx.get(f"{base}/api/feedback", params={"request_id": request_id, "negative": "true"}).json()
        assert [f["comment"] for f in listed] == ["wrong"]
        series = httpx.get(f"{base}/api/metrics/series", params={"metric": "requests", "window_s": 600}).json()
        assert sum(p["count"] for p in series["points"]) >= 1
        assert httpx.get(f"{base}/api/metrics/series", params={"metric": "nope"}).status_code == 404
        ran = httpx.post(f"{base}/api/runbooks/prompt-regression/run", json={"params": {}},
                         headers={"X-LLMOps-User": "oncall"})  # fmt: skip
        assert ran.status_code == 200 and ran.json()["status"] == "failed"  # label never moved: nothing to undo
        assert httpx.get(f"{base}/api/audit/verify").json()["ok"] is True


def test_prometheus_has_quality_latency_and_cost_of_answers_by_app_and_prompt_version(ingested: Platform) -> None:
    _ask(ingested)
    text = ingested.metrics.render().decode()
    assert 'llmops_rag_answers_total{app="handbook-rag",outcome="answered",prompt_version="1",snapshot="1"} 1.0' in text
    assert 'llmops_rag_seconds_count{app="handbook-rag",prompt_version="1"} 1.0' in text
    assert 'llmops_rag_cost_usd_total{app="handbook-rag",prompt_version="1"}' in text
    row = ingested.request_metrics.series("hallucination_rate", window_s=600, bucket_s=600)
    grounding = ingested.request_metrics.value("grounding_score")
    if grounding.value is not None:  # the default policy checks grounding: both views agree on who was checked
        assert 'llmops_rag_grounding_score_count{app="handbook-rag",prompt_version="1"} 1.0' in text
        assert row and row[0]["count"] == 1
