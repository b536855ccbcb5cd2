"""The stored side of drift detection: production questions embedded off the request path, windows tested on demand.

>>> monitor = DriftMonitor(store, journal, embedder, model_name=embedder.name,
...                        reference_size=150, window_size=50, alpha=0.01)        # doctest: +SKIP
>>> monitor.observe(request_id, "handbook", question)    # microseconds: a bounded queue  # doctest: +SKIP
>>> monitor.check("handbook")                             # the newest 50 against the 150 before them  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import case, func, select

from llmops.knowledge._tables import DocumentRow, IndexSnapshotRow, SnapshotChangeRow
from llmops.observability._drift import MIN_ROWS, DriftDetector, DriftResult
from llmops.observability._tables import DriftObservationRow, DriftReportRow, RequestMetricRow
from llmops.store import Journal, Store

__all__ = ["DriftMonitor", "QuestionEmbedder"]

logger = logging.getLogger("llmops.observability")

BATCH_SIZE = 32  # questions embedded together
BATCH_WAIT_S = 0.05  # longest a question waits for others to fill its batch
QUEUE_SIZE = 10_000  # beyond this the embedder cannot keep up: questions are dropped (and counted), never waited for


class QuestionEmbedder(Protocol):
    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class _Observation:
    request_id: str
    app: str
    question: str
    created_at: datetime


@dataclass(frozen=True)
class _Window:
    request_ids: list[str]
    created_at: list[datetime]
    texts: list[str]
    vectors: npt.NDArray[np.float32]
    first: datetime
    last: datetime


_STOP = object()


class DriftMonitor:
    """Records the embedding of every observed question and tests an app's newest window against its reference.

    ``observe`` only enqueues; a daemon thread embeds in batches (up to 32 questions or 50 ms) and journals
    ``drift_observations`` rows. ``check`` reads the windows back from the store, runs the `DriftDetector` and stores
    a ``drift_reports`` row. Observations made with another embedding model than ``model_name`` are ignored, so
    changing the embedder starts a fresh history instead of reporting the change of model as drift.
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        embedder: QuestionEmbedder,
        *,
        model_name: str,
        reference_size: int,
        window_size: int,
        alpha: float,
        detector: DriftDetector | None = None,
        queue_size: int = QUEUE_SIZE,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        """``scrub`` removes personal data from a question before it is stored; it runs on the monitor's thread,
        off the request path."""
        if reference_size < MIN_ROWS or window_size < MIN_ROWS:
            raise ValueError(f"reference_size and window_size must be at least {MIN_ROWS}")
        self._store = store
        self._journal = journal
        self._embedder = embedder
        self._scrub = scrub
        self.model_name = model_name
        self.reference_size = reference_size
        self.window_size = window_size
        if detector is not None and detector.alpha != alpha:
            raise ValueError(f"alpha={alpha} disagrees with the detector's alpha={detector.alpha}")
        self.detector = detector if detector is not None else DriftDetector(alpha=alpha)
        self.dropped = 0
        self._dropped_lock = threading.Lock()
        self._queue: queue.Queue[_Observation | object] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llmops-drift", daemon=True)
        self._thread.start()

    # -- the request path -------------------------------------------------------------------------------------------

    def observe(self, request_id: str, app: str, question: str) -> None:
        """Queue a question for embedding; never blocks (when the queue is full it is dropped and counted)."""
        if not self._closed:
            try:
                self._queue.put_nowait(_Observation(request_id, app, question, datetime.now(UTC)))
                return
            except queue.Full:
                pass
        with self._dropped_lock:
            self.dropped += 1

    def flush(self) -> None:
        """Wait until every queued question is embedded and its row is in the store."""
        self._queue.join()
        self._journal.flush()

    def close(self) -> None:
        """Embed what is queued, then stop the thread (the journal belongs to the caller and stays open)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=60)
        while True:  # an observe racing with close may have queued behind the stop: count it dropped
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            with self._dropped_lock:
                self.dropped += 1

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                self._queue.task_done()
                return
            batch = [first]
            deadline = time.monotonic() + BATCH_WAIT_S
            stop = False
            while len(batch) < BATCH_SIZE:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                self._record([o for o in batch if isinstance(o, _Observation)])
            except Exception:  # an embedder or journal failure must not kill the thread: these questions are lost
                logger.exception("embedding %d questions for drift detection failed; they are skipped", len(batch))
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()
            if stop:
                return

    def _record(self, batch: list[_Observation]) -> None:
        if self._scrub is not None:
            batch = [replace(o, question=self._scrub(o.question)) for o in batch]
        vectors = np.asarray(self._embedder.embed([o.question for o in batch]), dtype=np.float32)
        rows = [
            {
                "request_id": o.request_id,
                "app": o.app,
                "created_at": o.created_at,
                "question": o.question,
                "embedding": _encode(vector),
                "model": self.model_name,
            }
            for o, vector in zip(batch, vectors, strict=True)
        ]
        self._journal.append({"drift_observations": rows})

    # -- tests and reports ------------------------------------------------------------------------------------------

    def check(self, app: str, *, reference: tuple[datetime, datetime] | None = None) -> DriftResult | None:
        """Test the app's newest ``window_size`` questions against a reference and store the report.

        By default the reference is the ``reference_size`` questions just before the current window, and the check
        is one of a series: it reports drift only when the detector's ``confirmations`` checks in a row were
        significant (a check that sees fewer than a fifth of its window new since the previous one repeats that
        check rather than confirming it). With ``reference``, the questions asked in ``[start, end)`` (at most
        ``reference_size``, sampled evenly when there are more), it is a one-off test. None when either window is
        not full (an explicit range needs at least 10 questions).
        """
        with self._store.session() as session:
            base = select(
                DriftObservationRow.request_id,
                DriftObservationRow.question,
                DriftObservationRow.embedding,
                DriftObservationRow.created_at,
            ).where(DriftObservationRow.app == app, DriftObservationRow.model == self.model_name)
            newest_first = (DriftObservationRow.created_at.desc(), DriftObservationRow.request_id.desc())
            current_rows = session.execute(base.order_by(*newest_first).limit(self.window_size)).all()
            if len(current_rows) < self.window_size:
                return None
            if reference is None:
                query = base.order_by(*newest_first).offset(self.window_size).limit(self.reference_size)
                reference_rows = session.execute(query).all()
                minimum = self.reference_size
            else:
                start, end = (_utc(moment) for moment in reference)
                query = base.where(DriftObservationRow.created_at >= start, DriftObservationRow.created_at < end)
                in_window = {row.request_id for row in current_rows}
                reference_rows = [
                    row for row in session.execute(query.order_by(*newest_first)) if row.request_id not in in_window
                ]
                if len(reference_rows) > self.reference_size:
                    keep = np.linspace(0, len(reference_rows) - 1, self.reference_size).round().astype(int)
                    reference_rows = [reference_rows[i] for i in keep]
                minimum = MIN_ROWS
        if len(reference_rows) < minimum:
            return None
        current_window = _window(current_rows[::-1])
        reference_window = _window(reference_rows[::-1])
        if current_window.vectors.shape[1] != reference_window.vectors.shape[1]:
            return None  # the same model name with another dimension: nothing comparable yet
        prior = self._prior_significant(app, current_window) if reference is None else None
        result = self.detector.test(
            reference_window.vectors,
            reference_window.texts,
            current_window.vectors,
            current_window.texts,
            prior_significant=prior,
        )
        report = {
            **result.to_dict(),
            "model": self.model_name,
            "mode": "sliding" if reference is None else "range",
            # How many checks in a row, this one included, were significant: what the next check builds on.
            "significant_run": (prior or 0) + 1 if result.significant else 0,
            "current": [current_window.first.isoformat(), current_window.last.isoformat()],
            "reference": [reference_window.first.isoformat(), reference_window.last.isoformat()],
        }
        with self._store.session() as session:
            session.add(
                DriftReportRow(
                    id="drift_" + secrets.token_hex(12),
                    app=app,
                    created_at=datetime.now(UTC),
                    reference_size=result.reference_size,
                    window_size=result.window_size,
                    statistic=result.statistic,
                    p_value=result.p_value,
                    drifted=result.drifted,
                    report=report,
                )
            )
        return result

    def _prior_significant(self, app: str, current: _Window) -> int:
        """How many sliding checks in a row just before this one were significant (a repeat does not count)."""
        query = (
            select(DriftReportRow.report)
            .where(DriftReportRow.app == app)
            .order_by(DriftReportRow.created_at.desc(), DriftReportRow.id)
            .limit(20)
        )
        with self._store.session() as session:
            earlier = [
                r for r in session.scalars(query) if r.get("mode") == "sliding" and r.get("model") == self.model_name
            ]
        if not earlier:
            return 0
        run = int(earlier[0].get("significant_run", 0))
        previous_end = datetime.fromisoformat(earlier[0]["current"][1])
        fresh = sum(1 for moment in current.created_at if moment > previous_end)
        if fresh >= max(1, self.window_size // 5):
            return run
        return max(run - 1, 0)  # mostly the same questions: this check re-does the previous one

    def reports(self, app: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Stored drift reports, newest first."""
        query = select(DriftReportRow).order_by(DriftReportRow.created_at.desc(), DriftReportRow.id).limit(limit)
        if app is not None:
            query = query.where(DriftReportRow.app == app)
        with self._store.session() as session:
            rows = session.scalars(query).all()
        return [
            {
                "id": row.id,
                "app": row.app,
                "created_at": _utc(row.created_at).isoformat(),
                "reference_size": row.reference_size,
                "window_size": row.window_size,
                "statistic": row.statistic,
                "p_value": row.p_value,
                "drifted": row.drifted,
                "report": row.report,
            }
            for row in rows
        ]

    def retrieval_health(self, app: str, *, window_s: float = 3600.0) -> dict[str, Any]:
        """Retrieval signals of an app's RAG requests, the last ``window_s`` seconds against the period before.

        Per period: requests, the mean top-1 similarity of what was retrieved, and the share of requests that found
        no relevant context (abstained). Index freshness: the age of the newest ready index snapshot and of the
        newest document change (a snapshot that added, changed or removed a document, or a document ingested).
        """
        now = datetime.now(UTC)
        window = timedelta(seconds=window_s)
        with self._store.session() as session:
            periods = {
                "current": self._period(session, app, now - window, now),
                "previous": self._period(session, app, now - 2 * window, now - window),
            }
            snapshot_at = session.scalar(
                select(func.max(func.coalesce(IndexSnapshotRow.finished_at, IndexSnapshotRow.created_at))).where(
                    IndexSnapshotRow.status == "ready"
                )
            )
            changed_snapshot_at = session.scalar(
                select(func.max(func.coalesce(IndexSnapshotRow.finished_at, IndexSnapshotRow.created_at))).where(
                    IndexSnapshotRow.status == "ready",
                    IndexSnapshotRow.id.in_(select(SnapshotChangeRow.snapshot_id)),
                )
            )
            ingested_at = session.scalar(select(func.max(DocumentRow.ingested_at)))
        current, previous = periods["current"], periods["previous"]
        changes = [_utc(m) for m in (changed_snapshot_at, ingested_at) if m is not None]
        return {
            "app": app,
            "window_s": window_s,
            "current": current,
            "previous": previous,
            "top_score_change": _difference(current["mean_top_score"], previous["mean_top_score"]),
            "no_context_rate_change": _difference(current["no_context_rate"], previous["no_context_rate"]),
            "index_age_s": (now - _utc(snapshot_at)).total_seconds() if snapshot_at is not None else None,
            "document_change_age_s": (now - max(changes)).total_seconds() if changes else None,
        }

    @staticmethod
    def _period(session: Any, app: str, start: datetime, end: datetime) -> dict[str, Any]:
        row = session.execute(
            select(
                func.count(),
                func.avg(RequestMetricRow.top_score),
                func.count(RequestMetricRow.top_score),
                func.sum(case((RequestMetricRow.abstained, 1), else_=0)),
            ).where(
                RequestMetricRow.app == app,
                RequestMetricRow.kind == "rag",
                RequestMetricRow.created_at >= start,
                RequestMetricRow.created_at < end,
            )
        ).one()
        requests, mean_top, scored, abstained = int(row[0]), row[1], int(row[2]), row[3]
        return {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "requests": requests,
            "scored_requests": scored,
            "mean_top_score": float(mean_top) if mean_top is not None else None,
            "no_context_rate": float(abstained) / requests if requests else None,
        }


def _encode(vector: npt.NDArray[np.float32]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode("ascii")


def _decode(text: str) -> npt.NDArray[np.float32]:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)


def _window(rows: Sequence[Any]) -> _Window:
    """Rows (request_id, question, embedding, created_at), oldest first, as a window."""
    vectors = np.stack([_decode(row.embedding) for row in rows])
    return _Window(
        request_ids=[row.request_id for row in rows],
        created_at=[_utc(row.created_at) for row in rows],
        texts=[row.question for row in rows],
        vectors=vectors,
        first=_utc(rows[0].created_at),
        last=_utc(rows[-1].created_at),
    )


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _difference(current: float | None, previous: float | None) -> float | None:
    return current - previous if current is not None and previous is not None else None
