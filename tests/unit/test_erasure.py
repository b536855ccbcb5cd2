"""The right to erasure on SQLite and PostgreSQL: after two users ask, give feedback, and their questions become a
reviewed dataset, an experiment's items and a review item, erasing one leaves none of their questions, feedback text
or user id in any column of any table, keeps the other user's records whole and every total unchanged, and writes
one audit entry that names the user only by a hash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from llmops import Platform, RagConfig, Settings
from llmops.evaluation import EvalConfig, examples_from_traces
from llmops.evaluation._tables import DatasetVersionRow, EvalResultRow, OnlineScoreRow
from llmops.gateway._tables import GatewayCallRow
from llmops.governance._erasure import ERASED, erase_user, subject_hash
from llmops.loop._tables import FeedbackRow
from llmops.observability._tables import DriftObservationRow, RequestMetricRow
from llmops.server._privacy_api import privacy_router
from llmops.store import Base
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import LOCAL_MODEL, SAMPLES

ALICE, BOB = "alice-5f1c", "bob-77a2"
ALICE_ASKS = [
    "How many PTO days do new employees get in their first year?",
    "Can I carry over unused vacation days into next year?",
]
BOB_ASKS = ["What is the hotel limit for business travel?"]
ALICE_WROTE = ["the number of days is wrong for part-timers", "Part-time staff get prorated PTO days per policy"]
BOB_WROTE = "bob says the hotel answer was right"


@pytest.fixture
def platform(tmp_path: Path, database_url: str) -> Iterator[Platform]:
    """The fake platform (hash embedder, scripted model) with every answer scored online, the handbook ingested."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        rag_apps=[RagConfig(online_eval_rate=1.0, min_similarity=-1.0)],
    )
    built = Platform(settings, embedder=HashEmbedder(),
                     providers={LOCAL_MODEL: ScriptedProvider("New employees get 15 days of PTO [1].")})  # fmt: skip
    built.knowledge.ingest(SAMPLES)
    try:
        yield built
    finally:
        built.close()


def _ask(platform: Platform, user: str, question: str) -> str:
    return asyncio.run(platform.rag().ask(question, user=user)).request_id


def _every_text(platform: Platform) -> Iterator[tuple[str, str]]:
    """(table, text) for every string and JSON value in every table of the store."""
    with platform.store.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(table.select()):
                for value in row:
                    if isinstance(value, str):
                        yield table.name, value
                    elif isinstance(value, dict | list):
                        yield table.name, json.dumps(value, ensure_ascii=False)


def _found(platform: Platform, needles: list[str]) -> list[tuple[str, str]]:
    return [(table, needle) for table, text in _every_text(platform) for needle in needles if needle in text]


def _totals(platform: Platform) -> dict[str, Any]:
    with platform.store.session() as s:
        return {
            "requests": s.scalar(select(func.count()).select_from(RequestMetricRow)),
            "request_cost": s.scalar(select(func.sum(RequestMetricRow.cost_usd))),
            "request_tokens": s.scalar(
                select(func.sum(RequestMetricRow.input_tokens + RequestMetricRow.output_tokens))
            ),
            "gateway_calls": s.scalar(select(func.count()).select_from(GatewayCallRow)),
            "gateway_cost": s.scalar(select(func.sum(GatewayCallRow.cost_usd))),
            "feedback": s.scalar(select(func.count()).select_from(FeedbackRow)),
            "thumbs_down": s.scalar(select(func.count()).where(FeedbackRow.value == 0.0)),
            "online_scores": s.scalar(select(func.count()).select_from(OnlineScoreRow)),
            "users": s.scalar(select(func.count(func.distinct(RequestMetricRow.user)))),
        }


def test_erasure_removes_a_users_content_and_keeps_everyone_elses(platform: Platform) -> None:
    alice = [_ask(platform, ALICE, q) for q in ALICE_ASKS]
    bob = [_ask(platform, BOB, q) for q in BOB_ASKS]
    platform.feedback.record(alice[0], kind="thumbs", value="down", comment=ALICE_WROTE[0], user=ALICE)
    platform.feedback.record(alice[1], kind="correction", correction=ALICE_WROTE[1], user=ALICE)
    platform.feedback.record(bob[0], kind="thumbs", value="up", comment=BOB_WROTE, user=BOB)
    platform.feedback.record(alice[1], kind="thumbs", value="down", comment="reviewer: see ticket 7", user="reviewer")
    platform.feedback.record(alice[1], kind="thumbs", value="down", comment="wrong", user=ALICE)
    # Her questions become a reviewed dataset version, an experiment's items, and a review item.
    examples = examples_from_traces(platform.traces.select_answers())
    assert {e.input for e in examples} == {*ALICE_ASKS, *BOB_ASKS}
    drafts = platform.datasets.add_drafts("from-traces", examples, origin="traces")
    version = platform.datasets.review("from-traces", accept=drafts, by="curator")
    assert version is not None and version.version == 1
    platform.datasets.add_drafts("from-traces", examples_from_traces(platform.traces.select_answers()), origin="again")
    config = EvalConfig.model_validate({"name": "regression", "dataset": {"name": "from-traces"},
                                        "target": {"app": "handbook-rag"}, "metrics": ["faithfulness"]})  # fmt: skip
    experiment = asyncio.run(platform.evaluator.run(config))
    assert experiment.status == "finished" and len(experiment.items) == 3
    review = platform.reviews.open("Odd question", {"question": ALICE_ASKS[1], "said": f"asked: {ALICE_ASKS[0]}",
                                                    "verdict": "wrong"})  # fmt: skip
    platform.drift.flush()
    assert platform.online_eval is not None
    platform.online_eval.drain()
    platform.journal.flush()
    with platform.store.session() as s:
        assert s.scalar(select(func.count()).where(DriftObservationRow.request_id.in_(alice))) == 2
        assert s.scalar(select(func.count()).where(OnlineScoreRow.request_id.in_(alice))) >= 2
    assert {t for t, _ in _found(platform, [ALICE_ASKS[0]])} >= {
        "spans",
        "drift_observations",
        "eval_dataset_items",
        "eval_dataset_drafts",
        "eval_results",
        "review_items",
    }
    before = _totals(platform)
    version_hash = platform.datasets.get("from-traces").content_hash

    app = FastAPI()
    app.include_router(privacy_router(platform))
    with TestClient(app) as client:
        anonymous = client.delete(f"/api/users/{ALICE}/data")
        assert anonymous.status_code == 401 and "X-LLMOps-User" in anonymous.json()["detail"]
        assert _found(platform, [ALICE_ASKS[0]])  # refused: nothing changed
        response = client.delete(f"/api/users/{ALICE}/data", headers={"X-LLMOps-User": "dpo"})
    assert response.status_code == 200, response.text
    counts = response.json()
    assert counts["requests"] == 2 and counts["request_metrics_pseudonymised"] == 2
    assert counts["dataset_items_erased"] == 2 and counts["dataset_drafts_deleted"] == 4
    assert counts["eval_results_erased"] == 2 and counts["feedback_cleared"] == 4
    assert counts["traces_deleted"] >= 4  # hers and the experiment runs that answered her questions

    # Nothing she asked or wrote, nor her id, is left in any column of any table.
    assert _found(platform, [*ALICE_ASKS, *ALICE_WROTE, ALICE]) == []
    # Bob's records are whole: his trace, his feedback, his dataset item and experiment result.
    [trace] = platform.traces.select_answers(request_ids=bob)
    assert trace["attributes"]["llmops.rag.question"] == BOB_ASKS[0]
    assert [f.comment for f in platform.feedback.find(request_id=bob[0])] == [BOB_WROTE]
    items = {e.id: e for e in platform.datasets.get("from-traces").examples}
    assert items["tr_" + bob[0].removeprefix("req_")].input == BOB_ASKS[0]
    erased = [items["tr_" + r.removeprefix("req_")] for r in alice]
    assert all(e.input == ERASED and e.metadata["erased"] and "production_answer" not in e.metadata for e in erased)
    with platform.store.session() as s:
        inputs = set(s.scalars(select(EvalResultRow.input)))
        assert inputs == {BOB_ASKS[0], ERASED}
        users = set(s.scalars(select(RequestMetricRow.user).where(RequestMetricRow.request_id.in_(alice))))
        assert len(users) == 1 and users.pop().startswith("erased:")
        kept = s.scalars(select(FeedbackRow).where(FeedbackRow.request_id.in_(alice))).all()
        assert sorted((f.kind, f.value, f.comment, f.correction) for f in kept) == [
            ("correction", None, None, None), ("thumbs", 0.0, None, None), ("thumbs", 0.0, None, None),
            ("thumbs", 0.0, None, None)]  # fmt: skip
        message = s.scalars(select(DatasetVersionRow.message).where(DatasetVersionRow.version == 1)).one()
    assert "personal data erased from 2 item(s)" in message
    # A record that only quotes her keeps the rest; her short comment "wrong" is no reason to erase that word.
    [item] = [r for r in platform.reviews.list() if r["id"] == review]
    assert item["details"] == {"question": ERASED, "said": f"asked: {ERASED}", "verdict": "wrong"}
    assert platform.datasets.get("from-traces").content_hash == version_hash  # the record of what it was stays
    # Counts, costs and rates add up as before.
    assert _totals(platform) == before

    entries = platform.audit.entries(action="privacy.erase")
    assert len(entries) == 1 and entries[0]["actor"] == "dpo" and entries[0]["object_id"] == subject_hash(ALICE)
    assert entries[0]["details"]["counts"]["requests"] == 2 and ALICE not in json.dumps(entries[0])
    assert platform.audit.verify().ok

    again = erase_user(platform.store, platform.journal, platform.audit, ALICE, by="dpo")
    assert again["requests"] == 0 and again["audit_seq"] == entries[0]["seq"] + 1
    assert _totals(platform) == before and platform.audit.verify().ok


def test_refusals(platform: Platform) -> None:
    with pytest.raises(ValueError, match="user id is empty"):
        erase_user(platform.store, platform.journal, platform.audit, " ", by="dpo")
    with pytest.raises(ValueError, match="actor is empty"):
        erase_user(platform.store, platform.journal, platform.audit, ALICE, by="")
    assert platform.audit.entries(action="privacy.erase") == []


def test_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from llmops.cli._privacy import privacy_app

    database = f"sqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "llmops.yaml"
    apps = [{"name": "handbook-rag", "min_similarity": -1.0}]
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "database_url": database, "rag_apps": apps}))
    monkeypatch.setenv("LLMOPS_CONFIG", str(config))
    settings = Settings()
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("ok")})
    platform.knowledge.ingest(SAMPLES)
    request_id = _ask(platform, ALICE, ALICE_ASKS[0])
    platform.close()
    runner = CliRunner()
    declined = runner.invoke(privacy_app, ["erase", ALICE], input="n\n")
    assert declined.exit_code == 1 and "nothing erased" in declined.output
    done = runner.invoke(privacy_app, ["erase", ALICE, "--yes", "--user", "dpo", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["requests"] == 1
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("ok")})
    try:
        assert _found(platform, [ALICE_ASKS[0], ALICE]) == []
        assert platform.audit.entries(action="privacy.erase")[0]["actor"] == "dpo"
        with platform.store.session() as s:
            assert s.get(RequestMetricRow, request_id) is not None
    finally:
        platform.close()


def test_a_request_that_never_reached_the_model_is_erased_too(tmp_path: Path, database_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, rag_apps=[RagConfig(min_similarity=0.99)])
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("ok")})
    try:
        platform.knowledge.ingest(SAMPLES)
        answer = asyncio.run(platform.rag().ask(ALICE_ASKS[0], user=ALICE))
        assert answer.abstained  # nothing was similar enough: "I don't know", without asking the model
        platform.journal.flush()
        assert _found(platform, [ALICE_ASKS[0]])
        platform.erase_user(ALICE, by="dpo")
        assert _found(platform, [ALICE_ASKS[0]]) == []
    finally:
        platform.close()


def test_an_answer_held_for_review_is_erased_with_its_question(tmp_path: Path, database_url: str) -> None:
    from llmops._settings import HumanReviewConfig

    app = RagConfig(min_similarity=-1.0, human_review=HumanReviewConfig(always=True))
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, rag_apps=[app])
    model_says = "Alice's manager Carol approves her 15 PTO days [1]."
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider(model_says)})
    try:
        platform.knowledge.ingest(SAMPLES)
        answer = asyncio.run(platform.rag().ask(ALICE_ASKS[0], user=ALICE))
        assert answer.status == "pending_review"
        platform.reviews.resolve(answer.review_id or "", by="dana", verdict="release", answer="Edited: 15 days.")
        counts = platform.erase_user(ALICE, by="dpo")
        assert counts["held_answers_erased"] == 1
        assert _found(platform, [ALICE_ASKS[0], "Carol approves", "Edited: 15 days.", ALICE]) == []
        outcome = platform.reviews.answer(answer.request_id)
        assert outcome is not None and outcome["status"] == "released" and outcome["reviewer"] == "dana"
        assert outcome["answer"] == ERASED
    finally:
        platform.close()
