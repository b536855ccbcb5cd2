"""Drift on real questions and the bundled embedder: a new topic appears half-way through a stream of questions.

The 110 handbook questions each belong to one of six documents (their topic). A stream first draws (seeded, with
replacement) from five topics only; after the shift, 40% of the questions are about the sixth, information
security, which was never asked about before. A check runs every 20 questions, as `DriftMonitor` would: the newest
50 questions against the 150 before them, and drift is reported after two significant checks in a row.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from llmops.knowledge import MiniLMEmbedder
from llmops.observability._drift import DriftDetector, DriftResult
from llmops.observability._drift_monitor import DriftMonitor
from llmops.store import Journal, Store

from ..conftest import ROOT

NEW_TOPIC = "security.html"
REFERENCE, WINDOW, STEP = 150, 50, 20
UNSHIFTED, SHIFTED, SHARE = 400, 200, 0.4
DETECTION_BOUND = 100  # questions after the shift by which the drift must be reported
RUNS = 20

pytestmark = pytest.mark.models


@dataclass(frozen=True)
class Questions:
    texts: list[str]
    topics: npt.NDArray[np.str_]
    vectors: npt.NDArray[np.float32]

    def of(self, topic: str, *, new: bool) -> npt.NDArray[np.intp]:
        return np.flatnonzero((self.topics == topic) if new else (self.topics != topic))


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def questions(embedder: MiniLMEmbedder) -> Questions:
    """The 110 questions, embedded once for every run."""
    lines = (ROOT / "samples" / "handbook-queries.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    texts = [row["query"] for row in rows]
    topics = np.array([row["relevant"][0]["source"] for row in rows])
    return Questions(texts, topics, embedder.embed(texts))


def _stream(questions: Questions, seed: int) -> npt.NDArray[np.intp]:
    """Indices of the questions asked: five topics, then 40% of a sixth mixed in."""
    rng = np.random.default_rng(seed)
    old, new = questions.of(NEW_TOPIC, new=False), questions.of(NEW_TOPIC, new=True)
    before = rng.choice(old, UNSHIFTED)
    after = np.where(rng.random(SHIFTED) < SHARE, rng.choice(new, SHIFTED), rng.choice(old, SHIFTED))
    return np.concatenate([before, after])


def _first_drift(
    detector: DriftDetector, questions: Questions, stream: npt.NDArray[np.intp]
) -> tuple[int, DriftResult] | None:
    """Check every STEP questions as the monitor does; the position and result of the first reported drift."""
    prior = 0
    for t in range(REFERENCE + WINDOW, len(stream) + 1, STEP):
        reference, current = stream[t - WINDOW - REFERENCE : t - WINDOW], stream[t - WINDOW : t]
        result = detector.test(
            questions.vectors[reference],
            [questions.texts[i] for i in reference],
            questions.vectors[current],
            [questions.texts[i] for i in current],
            prior_significant=prior,
        )
        if result.drifted:
            return t, result
        prior = prior + 1 if result.significant else 0
    return None


def _distinctive_words(questions: Questions) -> set[str]:
    """Words of the new topic's questions that no question of the other topics uses."""

    def words(indices: npt.NDArray[np.intp]) -> set[str]:
        found = {w for i in indices for w in re.findall(r"[a-z][a-z0-9]+", questions.texts[i].lower())}
        return {w for w in found if w not in ENGLISH_STOP_WORDS}

    return words(questions.of(NEW_TOPIC, new=True)) - words(questions.of(NEW_TOPIC, new=False))


def test_a_new_topic_is_detected_soon_after_it_appears_and_named(questions: Questions) -> None:
    found = _first_drift(DriftDetector(), questions, _stream(questions, seed=0))
    assert found is not None, "the new topic was never reported"
    at, result = found
    assert UNSHIFTED < at <= UNSHIFTED + DETECTION_BOUND, f"reported after {at - UNSHIFTED} questions of the shift"
    top = result.clusters[0]
    distinctive = _distinctive_words(questions)  # e.g. password, laptop, phishing, encryption
    assert len(set(top.terms[:3]) & distinctive) >= 2, (top.terms, sorted(distinctive))
    assert top.reference_share < 0.1 and top.growth >= 0.1, top
    security = {questions.texts[i] for i in questions.of(NEW_TOPIC, new=True)}
    assert top.examples and set(top.examples) <= security
    print(f"\nreported {at - UNSHIFTED} questions after the shift: {result.summary()}")


def test_false_alarms_are_rare_and_detection_is_reliable_over_repeated_runs(questions: Questions) -> None:
    detector = DriftDetector()
    distinctive = _distinctive_words(questions)
    false_alarms, delays, named = 0, [], 0
    started = time.perf_counter()
    for seed in range(RUNS):
        found = _first_drift(detector, questions, _stream(questions, seed))
        if found is not None and found[0] <= UNSHIFTED:
            false_alarms += 1
        elif found is not None:
            delays.append(found[0] - UNSHIFTED)
            named += len(set(found[1].clusters[0].terms[:3]) & distinctive) >= 2
    detected = sum(1 for d in delays if d <= DETECTION_BOUND)
    checks = (UNSHIFTED - REFERENCE - WINDOW) // STEP + 1
    print(
        f"\n{RUNS} runs ({checks} checks before the shift each, alpha={detector.alpha}, two in a row): "
        f"false alarms in {false_alarms} runs ({false_alarms / RUNS:.0%}); "
        f"detected within {DETECTION_BOUND} questions in {detected} ({detected / RUNS:.0%}), "
        f"within the {SHIFTED} shifted questions in {len(delays)}; delays {sorted(delays)}; "
        f"top topic named by two of its own words in {named} of {len(delays)}; {time.perf_counter() - started:.1f} s"
    )
    # Over 200 streams: no false alarm before the shift, 88.5% reported within 100 questions, 80% named.
    assert false_alarms <= 1
    assert detected >= 16
    assert named >= 0.6 * len(delays)


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Store, Journal]]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    journal = Journal(store, tmp_path / "journal", interval=0.05)
    try:
        yield store, journal
    finally:
        journal.close()
        store.close()


def test_the_monitor_reports_the_shift_end_to_end(
    questions: Questions, embedder: MiniLMEmbedder, stored: tuple[Store, Journal]
) -> None:
    store, journal = stored
    monitor = DriftMonitor(
        store,
        journal,
        embedder,
        model_name=embedder.name,
        reference_size=REFERENCE,
        window_size=WINDOW,
        alpha=DriftDetector().alpha,
    )
    stream = _stream(questions, seed=1)
    reported_at = None
    for t in range(STEP, len(stream) + 1, STEP):
        for i in range(t - STEP, t):
            monitor.observe(f"req_{i:05d}", "handbook", questions.texts[stream[i]])
        monitor.flush()
        result = monitor.check("handbook")
        assert (result is None) == (t < REFERENCE + WINDOW)
        if result is not None and result.drifted:
            reported_at = t
            break
    monitor.close()
    assert monitor.dropped == 0
    assert reported_at is not None and UNSHIFTED < reported_at <= UNSHIFTED + DETECTION_BOUND, reported_at
    reports = monitor.reports("handbook", limit=100)
    assert len(reports) == (reported_at - REFERENCE - WINDOW) // STEP + 1
    latest = reports[0]
    assert latest["drifted"] and latest["report"]["summary"].startswith("drift (p=")
    assert len(set(latest["report"]["clusters"][0]["terms"][:3]) & _distinctive_words(questions)) >= 2
    assert not any(r["drifted"] for r in reports[1:])
    print(f"\nmonitor reported {reported_at - UNSHIFTED} questions after the shift: {latest['report']['summary']}")
