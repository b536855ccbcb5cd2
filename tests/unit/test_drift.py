"""Semantic drift: the MMD permutation test's calibration and power, topic explanations, and the stored monitor."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import sqlalchemy as sa

from llmops.knowledge._tables import DocumentRow, IndexSnapshotRow, SnapshotChangeRow
from llmops.observability._drift import DriftDetector, explain_drift, mmd_permutation_test
from llmops.observability._drift_monitor import DriftMonitor
from llmops.observability._tables import DriftObservationRow
from llmops.store import Journal, Store
from llmops.testing import HashEmbedder

# Three old topics and one that appears only in the current window, each with its own words.
TOPICS = {
    "leave": ["vacation days", "holiday allowance", "sick leave", "parental leave", "vacation carryover"],
    "money": ["expense report", "travel receipts", "meal allowance", "mileage claim", "expense approval"],
    "remote": ["home office", "remote stipend", "coworking space", "office chair", "remote schedule"],
    "security": ["password manager", "laptop encryption", "phishing email", "password length", "laptop lock"],
}
STEMS = ["{} and {}?", "{} or {}?", "{}, then {}?", "{} with {}?"]


def _questions(topic: str, count: int, rng: np.random.Generator) -> list[str]:
    """Questions on one topic: a stem naming two of its phrases (the topic's words outweigh the stem's)."""
    phrases = TOPICS[topic]
    return [
        STEMS[rng.integers(len(STEMS))].format(*(phrases[i] for i in rng.choice(len(phrases), 2, replace=False)))
        for _ in range(count)
    ]


def _gaussian(rng: np.random.Generator, n: int, dims: int, shift: float = 0.0) -> npt.NDArray[np.float64]:
    data = rng.normal(size=(n, dims))
    data[:, :4] += shift
    return data


# -- the test statistic -------------------------------------------------------------------------------------------


def test_p_values_are_calibrated_when_nothing_changed() -> None:
    p_values = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        _, p = mmd_permutation_test(
            _gaussian(rng, 80, 16), _gaussian(rng, 40, 16), permutations=200, rng=np.random.default_rng(1000 + seed)
        )
        p_values.append(p)
    rejections = np.mean(np.array(p_values) < 0.05)
    assert rejections <= 0.12, rejections
    # Roughly uniform, not merely rarely small: a quarter or so falls in each quarter of [0, 1].
    quarters = np.histogram(p_values, bins=4, range=(0, 1))[0]
    assert quarters.min() >= 10, quarters


def test_a_shifted_mean_is_detected() -> None:
    rng = np.random.default_rng(7)
    statistic, p = mmd_permutation_test(
        _gaussian(rng, 80, 16), _gaussian(rng, 40, 16, shift=0.8), permutations=500, rng=rng
    )
    assert p < 0.01 and statistic > 0
    same_statistic, _ = mmd_permutation_test(_gaussian(rng, 80, 16), _gaussian(rng, 40, 16), permutations=50, rng=rng)
    assert statistic > 5 * abs(same_statistic)


def test_the_p_value_counts_the_observed_labelling() -> None:
    rng = np.random.default_rng(0)
    _, p = mmd_permutation_test(_gaussian(rng, 30, 4), _gaussian(rng, 30, 4, shift=10.0), permutations=99, rng=rng)
    assert p == pytest.approx(1 / 100)  # (b + 1) / (B + 1) with b = 0: never exactly zero


def test_four_hundred_points_of_384_dimensions_take_well_under_a_second() -> None:
    rng = np.random.default_rng(0)
    reference, current = _gaussian(rng, 300, 384), _gaussian(rng, 100, 384)
    mmd_permutation_test(reference, current, permutations=500, rng=rng)  # warm up BLAS
    started = time.perf_counter()
    mmd_permutation_test(reference, current, permutations=500, rng=rng)
    assert time.perf_counter() - started < 0.5


# -- explanations -------------------------------------------------------------------------------------------------


def _embedded(texts: list[str]) -> npt.NDArray[np.float32]:
    return HashEmbedder(dimensions=128).embed(texts)


def test_explain_drift_finds_a_planted_new_topic_and_its_words() -> None:
    rng = np.random.default_rng(3)
    reference = _questions("leave", 50, rng) + _questions("money", 50, rng) + _questions("remote", 50, rng)
    current = _questions("leave", 20, rng) + _questions("money", 20, rng) + _questions("security", 40, rng)
    clusters = explain_drift(_embedded(reference), reference, _embedded(current), current)
    top = clusters[0]
    assert top.new and top.reference_share == 0.0
    assert top.current_share == pytest.approx(0.5) and top.growth == pytest.approx(0.5)
    security_words = {w for phrase in TOPICS["security"] for w in phrase.split()}
    assert top.terms and set(top.terms[:3]) <= security_words, top.terms
    assert len(top.examples) == 3 and len(set(top.examples)) == 3
    assert all(any(p in e for p in TOPICS["security"]) for e in top.examples)
    assert [c.growth for c in clusters] == sorted((c.growth for c in clusters), reverse=True)
    assert sum(c.reference_share for c in clusters) == pytest.approx(1.0, abs=1e-3)
    assert all(c.growth < 0 and not c.new for c in clusters if not set(c.terms) & security_words)


def test_the_detector_explains_a_drift_and_stays_quiet_otherwise() -> None:
    rng = np.random.default_rng(5)
    reference = _questions("leave", 60, rng) + _questions("money", 60, rng)
    shifted = _questions("leave", 25, rng) + _questions("security", 25, rng)
    same = _questions("leave", 25, rng) + _questions("money", 25, rng)
    detector = DriftDetector()

    drifted = detector.test(_embedded(reference), reference, _embedded(shifted), shifted)  # a one-off test
    assert drifted.drifted and drifted.significant and drifted.p_value < 0.01 and drifted.alpha == 0.01
    assert (drifted.reference_size, drifted.window_size) == (120, 50)
    assert drifted.clusters[0].new and drifted.clusters[0].growth == pytest.approx(0.5)
    summary = drifted.summary()
    assert summary.startswith("drift (p=0.002): grew '") and summary.endswith("' +50% (new)"), summary
    as_dict = json.loads(json.dumps(drifted.to_dict()))
    assert as_dict["drifted"] is True and as_dict["clusters"][0]["terms"] == drifted.clusters[0].terms
    assert as_dict["summary"] == summary and as_dict["significant"] is True
    assert detector.test(_embedded(reference), reference, _embedded(shifted), shifted) == drifted  # deterministic

    quiet = detector.test(_embedded(reference), reference, _embedded(same), same)
    assert not quiet.drifted and not quiet.significant and quiet.clusters == []
    assert quiet.summary().startswith("no drift (p=")


def test_a_repeated_check_needs_confirming() -> None:
    rng = np.random.default_rng(6)
    reference = _questions("leave", 60, rng) + _questions("money", 60, rng)
    shifted = _questions("leave", 25, rng) + _questions("security", 25, rng)
    args = (_embedded(reference), reference, _embedded(shifted), shifted)
    detector = DriftDetector(confirmations=2)
    first = detector.test(*args, prior_significant=0)
    assert first.significant and not first.drifted and first.clusters == []
    assert first.summary().startswith("possible drift (p=0.002)")
    second = detector.test(*args, prior_significant=1)
    assert second.drifted and second.clusters and second.p_value == first.p_value
    assert DriftDetector(confirmations=1).test(*args, prior_significant=0).drifted


def test_bad_input_is_a_clear_error() -> None:
    rng = np.random.default_rng(0)
    texts = [f"q{i}" for i in range(20)]
    a, b = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    detector = DriftDetector()
    with pytest.raises(ValueError, match="same embedding model"):
        detector.test(a, texts, rng.normal(size=(20, 9)), texts)
    with pytest.raises(ValueError, match="at least 10 questions, got 5"):
        detector.test(a, texts, b[:5], texts[:5])
    with pytest.raises(ValueError, match="must pair up"):
        detector.test(a, texts[:19], b, texts)
    with pytest.raises(ValueError, match="2-D"):
        detector.test(a[0], texts, b, texts)
    with pytest.raises(ValueError, match="NaN"):
        detector.test(a, texts, np.full((20, 8), np.nan), texts)
    with pytest.raises(ValueError, match="alpha"):
        DriftDetector(alpha=0)
    with pytest.raises(ValueError, match="cannot give a p-value below"):
        DriftDetector(alpha=0.01, permutations=50)


# -- the stored monitor -------------------------------------------------------------------------------------------


@pytest.fixture
def stored(database_url: str, tmp_path: Path) -> Iterator[tuple[Store, Journal]]:
    store = Store(database_url)
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=0.02)
    try:
        yield store, journal
    finally:
        journal.close()
        store.close()


def _monitor(store: Store, journal: Journal, **kwargs: object) -> DriftMonitor:
    options: dict[str, object] = {"model_name": "hash-128", "reference_size": 40, "window_size": 20, "alpha": 0.01}
    options.update(kwargs)
    return DriftMonitor(store, journal, HashEmbedder(dimensions=128), **options)  # type: ignore[arg-type]


def test_observed_questions_are_tested_and_the_report_is_stored(stored: tuple[Store, Journal]) -> None:
    store, journal = stored
    monitor = _monitor(store, journal)  # reference 40, window 20
    rng = np.random.default_rng(1)
    asked: list[str] = []

    def ask(questions: list[str]) -> None:
        for question in questions:
            monitor.observe(f"req_{len(asked):04d}", "handbook", question)
            monitor.observe(f"other_{len(asked):04d}", "other-app", question)
            asked.append(question)
        monitor.flush()

    old = _questions("leave", 25, rng) + _questions("money", 25, rng)
    rng.shuffle(old)
    ask(old)
    assert monitor.check("handbook") is None  # 50 questions: the window (20) is full, the reference (40) is not
    assert monitor.check("nobody") is None
    ask(old[:10])
    with store.session() as session:
        row = session.get(DriftObservationRow, "req_0003")
        assert row is not None and row.question == old[3] and row.model == "hash-128"
        decoded = np.frombuffer(base64.b64decode(row.embedding), dtype="<f2")
        np.testing.assert_allclose(decoded, HashEmbedder(dimensions=128).embed([old[3]])[0], atol=1e-3)
    steady = monitor.check("handbook")
    assert steady is not None and not steady.significant and not steady.drifted

    def mixed(count: int) -> list[str]:
        questions = _questions("security", count // 2, rng) + _questions("leave", count - count // 2, rng)
        rng.shuffle(questions)
        return questions

    ask(mixed(20))
    first = monitor.check("handbook")
    assert first is not None and first.significant and not first.drifted  # one significant check is not enough
    again = monitor.check("handbook")  # nothing new: a repeat, not a confirmation
    assert again is not None and again.significant and not again.drifted
    ask(mixed(8))
    result = monitor.check("handbook")
    assert result is not None and result.drifted, result
    assert (result.reference_size, result.window_size) == (40, 20)
    top = result.clusters[0]
    assert top.growth > 0.3 and set(top.terms[:3]) <= {w for p in TOPICS["security"] for w in p.split()}
    assert top.examples and all(e in asked[60:] for e in top.examples)

    reports = monitor.reports("handbook")
    assert [r["drifted"] for r in reports] == [True, False, False, False]  # newest first
    assert [r["report"]["significant_run"] for r in reports] == [2, 1, 1, 0]
    report = reports[0]
    assert report["id"].startswith("drift_") and report["p_value"] == result.p_value
    assert report["report"]["clusters"][0]["terms"] == top.terms and report["report"]["mode"] == "sliding"
    assert report["report"]["model"] == "hash-128" and report["report"]["summary"] == result.summary()
    json.dumps(reports)  # plain JSON
    assert monitor.reports("other-app") == [] and len(monitor.reports(limit=2)) == 2

    # A reference given as a time range (the first 30 questions, all old topics): a one-off test.
    with store.session() as session:
        query = sa.select(DriftObservationRow.created_at).where(DriftObservationRow.app == "handbook")
        times = sorted(session.scalars(query))
    ranged = monitor.check("handbook", reference=(times[0], times[30]))
    assert ranged is not None and ranged.reference_size == 30 and ranged.drifted
    assert monitor.reports("handbook", limit=1)[0]["report"]["mode"] == "range"
    monitor.close()


def test_observations_of_another_embedding_model_are_ignored(stored: tuple[Store, Journal]) -> None:
    store, journal = stored
    rng = np.random.default_rng(2)
    before = _monitor(store, journal, model_name="old-model")
    for i, question in enumerate(_questions("leave", 60, rng)):
        before.observe(f"old_{i}", "handbook", question)
    before.flush()
    before.close()
    monitor = _monitor(store, journal)
    assert monitor.check("handbook") is None  # 60 questions, but none embedded by this model
    for i, question in enumerate(_questions("leave", 60, rng)):
        monitor.observe(f"new_{i}", "handbook", question)
    monitor.flush()
    result = monitor.check("handbook")
    assert result is not None and not result.drifted and result.clusters == []
    monitor.close()


class _BlockedEmbedder:
    """Embeds only once released: lets a test fill the queue."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        self.release.wait(10)
        self.calls += 1
        return HashEmbedder(dimensions=16).embed(texts)


def test_observe_never_blocks_and_counts_what_it_drops(stored: tuple[Store, Journal]) -> None:
    store, journal = stored
    embedder = _BlockedEmbedder()
    monitor = DriftMonitor(
        store, journal, embedder, model_name="m", reference_size=10, window_size=10, alpha=0.01, queue_size=100
    )
    started = time.perf_counter()
    for i in range(1000):
        monitor.observe(f"r{i}", "app", f"question {i}")
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, elapsed  # 1,000 observations, the embedder stuck: no waiting
    # The thread holds the first question; the queue holds 100 more; everything after is dropped.
    assert 1000 - 101 - 32 <= monitor.dropped <= 1000 - 100
    embedder.release.set()
    monitor.flush()
    with store.session() as session:
        stored_rows = session.query(DriftObservationRow).count()
    assert stored_rows == 1000 - monitor.dropped
    assert embedder.calls <= stored_rows / 2  # batched, not one by one
    monitor.close()
    monitor.observe("late", "app", "after close")
    assert monitor.dropped == 1000 - stored_rows + 1


def _metric(request_id: str, at: datetime, *, top: float | None, abstained: bool, app: str = "hb") -> dict[str, object]:
    return {
        "request_id": request_id, "trace_id": request_id.ljust(32, "0"), "created_at": at, "kind": "rag",
        "app": app, "prompt_name": None, "prompt_version": None, "model": None, "index_snapshot": None,
        "user": None, "team": None, "status": "ok", "sampled": False, "blocked": False, "abstained": abstained,
        "duration_ms": 10.0, "ttft_ms": None, "retrieval_ms": None, "tokens_per_s": None, "input_tokens": 0,
        "output_tokens": 0, "cost_usd": 0.0, "grounding_score": None, "unsupported_claims": None, "top_score": top,
        "guardrail_triggers": 0, "pii_incidents": 0, "rails": [],
    }  # fmt: skip


def _snapshot(number: int, created: datetime, *, finished: datetime | None) -> IndexSnapshotRow:
    status = "ready" if finished else "building"
    return IndexSnapshotRow(
        id=number, created_at=created, embedding_model="m", documents=1, chunks=1, stats={}, status=status,
        finished_at=finished,
    )  # fmt: skip


def test_retrieval_health_compares_the_last_hour_with_the_hour_before(stored: tuple[Store, Journal]) -> None:
    store, journal = stored
    monitor = _monitor(store, journal)
    assert monitor.retrieval_health("hb")["index_age_s"] is None  # nothing ingested, nothing asked
    now = datetime.now(UTC)
    rows = [_metric(f"p{i}", now - timedelta(minutes=90), top=0.8, abstained=False) for i in range(4)]
    rows += [_metric(f"c{i}", now - timedelta(minutes=10), top=0.5, abstained=i < 2) for i in range(4)]
    rows += [_metric("c4", now - timedelta(minutes=10), top=None, abstained=True)]
    rows += [_metric("x0", now - timedelta(minutes=10), top=0.1, abstained=True, app="other")]
    rows += [_metric("old", now - timedelta(hours=5), top=0.1, abstained=True)]
    journal.append({"request_metrics": rows})
    journal.flush()
    with store.session() as session:
        session.add(_snapshot(1, now - timedelta(hours=3), finished=now - timedelta(hours=2)))
        session.add(_snapshot(2, now - timedelta(minutes=30), finished=now - timedelta(minutes=29)))
        session.add(_snapshot(3, now, finished=None))  # still building: not what readers see
        session.add(SnapshotChangeRow(snapshot_id=1, document_id="d1", change="added", content_hash="h", source="s"))
        session.add(DocumentRow(id="d1", source="s", title="t", content_hash="h", parser="md", size_bytes=1,
                                ingested_at=now - timedelta(hours=2, minutes=1), meta={}))  # fmt: skip
    health = monitor.retrieval_health("hb")
    json.dumps(health)
    assert health["current"]["requests"] == 5 and health["previous"]["requests"] == 4
    assert health["current"]["scored_requests"] == 4
    assert health["current"]["mean_top_score"] == pytest.approx(0.5)
    assert health["previous"]["mean_top_score"] == pytest.approx(0.8)
    assert health["top_score_change"] == pytest.approx(-0.3)
    assert health["current"]["no_context_rate"] == pytest.approx(3 / 5)
    assert health["previous"]["no_context_rate"] == 0.0 and health["no_context_rate_change"] == pytest.approx(0.6)
    # Snapshot 2 (29 minutes old) is the newest ready one; the newest document change is snapshot 1 (two hours).
    assert 29 * 60 <= health["index_age_s"] < 31 * 60
    assert 2 * 3600 <= health["document_change_age_s"] < 2 * 3600 + 120
    empty = monitor.retrieval_health("nobody", window_s=60)
    assert empty["current"]["requests"] == 0 and empty["current"]["mean_top_score"] is None
    assert empty["top_score_change"] is None
    monitor.close()
