"""The right to erasure: remove what one user asked, answered and wrote, keep the numbers, and record the deletion.

``erase_user`` finds the user's requests (their metrics rows and gateway calls name them) and removes the content
those requests left behind, wherever it went:

- traces and spans of the requests: deleted (they hold the question, the answer, guardrail events);
- question embeddings kept for drift detection: deleted;
- online evaluation scores: values kept, ``details`` (claims quoted from the answer) cleared, errors replaced;
- feedback on the requests, or given by the user: thumbs and ratings kept, comments and corrections removed;
- dataset drafts made from the requests: deleted, whatever their review status;
- dataset items made from the requests: their text (input, expected answer, facts, assertions, the production
  answer in the metadata) replaced with ``[erased]``. Dataset versions are immutable, but the right to erasure
  overrides that for personal data: the item keeps its id and place, the version keeps its original content hash
  (so it is visible that its content changed) and its message says when and how many items were erased;
- experiment results on those questions: input and output replaced, score details cleared, and the traces of the
  runs that answered them deleted like the user's own;
- derived records that may quote a question (drift reports' example questions, trigger firings, action runs,
  review items): the user's questions and feedback text replaced where they occur; answers held for human review:
  question, answer and citations erased (the reviewer's decision stays);
- the embedding cache: entries for the user's questions deleted.

What stays, pseudonymised: the request metrics, gateway calls (costs) and feedback values, whose ``user`` becomes a
random tombstone (``erased:<12 hex>``, one per erasure), so counts, costs and rates add up as before and the rows of
one erased user still group together, without a way back to the user (a hash of a guessable user id would be one).

One ``privacy.erase`` entry goes to the audit log: who erased, the SHA-256 of the user id (to prove later that a
given user was erased, without naming them) and the counts. Audit entries the user wrote as an actor stay: the
log is hash-chained, and an accountability record is kept by law where erasure does not reach.

Limits: a request of the user still in flight, or still buffered by a background queue not passed in ``settle``,
lands after the erasure; so do response caches (in memory or Redis, until their TTL). Run it again to catch those.

>>> counts = erase_user(store, journal, audit, "alice", by="dpo@example.com")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from llmops.evaluation._tables import (
    DatasetDraftRow,
    DatasetItemRow,
    DatasetVersionRow,
    EvalResultRow,
    OnlineScoreRow,
)
from llmops.gateway._tables import GatewayCallRow
from llmops.governance._audit import AuditLog
from llmops.knowledge._tables import EmbeddingCacheRow
from llmops.loop._tables import ActionRunRow, FeedbackRow, ReviewItemRow, TriggerFiringRow
from llmops.observability._tables import DriftObservationRow, DriftReportRow, RequestMetricRow, SpanRow, TraceRow
from llmops.store import Journal, Store

__all__ = ["ERASED", "erase_user", "subject_hash"]

ERASED = "[erased]"
_QUESTION_ATTRIBUTES = ("llmops.rag.question",)
# In records without a link to the user's requests, a text of theirs is replaced where it is a whole value (from 8
# characters) or inside a longer text (from 16): a short word of theirs ("wrong") must not erase everyone's.
_MIN_WHOLE, _MIN_SUBSTRING = 8, 16
_BATCH = 500
T = TypeVar("T")
_Derived = DriftReportRow | TriggerFiringRow | ActionRunRow | ReviewItemRow


def subject_hash(user_id: str) -> str:
    """How the audit log names an erased user: ``sha256:<hex>`` of the user id."""
    return "sha256:" + hashlib.sha256(user_id.encode()).hexdigest()


def erase_user(
    store: Store,
    journal: Journal,
    audit: AuditLog,
    user_id: str,
    *,
    by: str,
    settle: Sequence[Callable[[], None]] = (),
) -> dict[str, int]:
    """Erase ``user_id``'s content (see the module doc) in one transaction, then record one ``privacy.erase`` audit
    entry. Returns what was done, by kind of record, and the audit entry's number (``audit_seq``).

    ``settle``: background queues to drain first (the drift monitor's ``flush``, the online evaluator's ``drain``)
    so that nothing of the user's is still on its way to the store. Raises ValueError for an empty user or actor."""
    if not user_id.strip():
        raise ValueError("which user? the user id is empty")
    if not by.strip():
        raise ValueError("who erases? the actor is empty")
    for drain in settle:
        drain()
    journal.flush()
    tombstone = "erased:" + secrets.token_hex(6)
    with store.session() as session:
        counts = _Erasure(session, user_id, tombstone).run()
    counts["audit_seq"] = audit.record(
        by,
        "privacy.erase",
        "user",
        subject_hash(user_id),
        details={
            "counts": dict(counts),
            "rule": "content deleted or replaced with [erased]; metrics, costs and feedback values kept under a "
            "random pseudonym; dataset items erased in place (immutability overridden for personal data)",
        },
    )
    return counts


class _Erasure:
    """One erasure's work inside one session: find, then remove or replace, counting as it goes."""

    def __init__(self, session: Session, user_id: str, tombstone: str) -> None:
        self.session = session
        self.user_id = user_id
        self.tombstone = tombstone
        self.texts: set[str] = set()  # what the user wrote: questions, feedback comments and corrections
        self.counts: dict[str, int] = {}

    def run(self) -> dict[str, int]:
        requests = self._requests()
        self.counts["requests"] = len(requests)
        self._collect_texts(requests)
        self._erase_drafts(requests)
        self._erase_dataset_items(requests)
        derived = self._erase_eval_results()
        self._erase_request_content(requests | derived)
        self._clear_feedback(requests)
        self._erase_held_answers(requests)
        self._pseudonymise()
        self._scrub_derived_records()
        self._forget_embeddings()
        return self.counts

    # ---- finding --------------------------------------------------------------------------------------------------

    def _requests(self) -> set[str]:
        s, user = self.session, self.user_id
        found = set(s.scalars(select(RequestMetricRow.request_id).where(RequestMetricRow.user == user)))
        found |= set(s.scalars(select(GatewayCallRow.request_id).where(GatewayCallRow.user == user)))
        return found

    def _trace_ids(self, requests: Collection[str]) -> set[str]:
        found: set[str] = set()
        for batch in _batches(requests):
            found |= set(self.session.scalars(select(TraceRow.trace_id).where(TraceRow.request_id.in_(batch))))
            found |= set(
                self.session.scalars(select(RequestMetricRow.trace_id).where(RequestMetricRow.request_id.in_(batch)))
            )
        return found

    def _collect_texts(self, requests: set[str]) -> None:
        s = self.session
        for batch in _batches(self._trace_ids(requests)):
            for attributes in s.scalars(
                select(SpanRow.attributes).where(SpanRow.trace_id.in_(batch), SpanRow.parent_span_id.is_(None))
            ):
                self._remember(*(attributes.get(name) for name in _QUESTION_ATTRIBUTES))
        for batch in _batches(requests):
            self._remember(
                *s.scalars(select(DriftObservationRow.question).where(DriftObservationRow.request_id.in_(batch)))
            )
        for comment, correction in s.execute(
            select(FeedbackRow.comment, FeedbackRow.correction).where(FeedbackRow.user == self.user_id)
        ):
            self._remember(comment, correction)

    def _remember(self, *values: Any) -> None:
        self.texts.update(v.strip() for v in values if isinstance(v, str) and v.strip() and v.strip() != ERASED)

    # ---- datasets and experiments ---------------------------------------------------------------------------------

    def _erase_drafts(self, requests: set[str]) -> None:
        doomed = []
        for draft_id, data in self.session.execute(select(DatasetDraftRow.id, DatasetDraftRow.data)):
            if _request_of(data) in requests:
                self._remember(data.get("input"))
                doomed.append(draft_id)
        for batch in _batches(doomed):
            self.session.execute(delete(DatasetDraftRow).where(DatasetDraftRow.id.in_(batch)))
        self.counts["dataset_drafts_deleted"] = len(doomed)

    def _erase_dataset_items(self, requests: set[str]) -> None:
        erased: dict[int, int] = {}  # version id -> items erased
        rows = self.session.execute(select(DatasetItemRow.version_id, DatasetItemRow.position, DatasetItemRow.data))
        for version_id, position, data in list(rows):
            if _request_of(data) not in requests or data.get("metadata", {}).get("erased"):
                continue
            self._remember(data.get("input"))
            self.session.execute(
                update(DatasetItemRow)
                .where(DatasetItemRow.version_id == version_id, DatasetItemRow.position == position)
                .values(data=_erased_item(data))
            )
            erased[version_id] = erased.get(version_id, 0) + 1
        today = datetime.now(UTC).date().isoformat()
        for version_id, items in erased.items():
            version = self.session.get(DatasetVersionRow, version_id)
            if version is not None:
                note = f"[{today}: personal data erased from {items} item(s) on request (audit: privacy.erase)]"
                version.message = f"{version.message} {note}".strip()
        self.counts["dataset_items_erased"] = sum(erased.values())
        self.counts["dataset_versions_marked"] = len(erased)

    def _erase_eval_results(self) -> set[str]:
        """Experiment results on the user's questions; returns the request ids of the runs that answered them."""
        traces: set[str] = set()
        erased = 0
        for batch in _batches(self.texts):
            result = EvalResultRow
            rows = self.session.execute(
                select(result.experiment_id, result.example_id, result.trace_id, result.scores).where(
                    result.input.in_(batch)
                )
            ).all()
            for experiment_id, example_id, trace_id, scores in rows:
                cleared = {n: {**v, "details": {}} if isinstance(v, dict) else v for n, v in (scores or {}).items()}
                self.session.execute(
                    update(EvalResultRow)
                    .where(EvalResultRow.experiment_id == experiment_id, EvalResultRow.example_id == example_id)
                    .values(input=ERASED, output=ERASED, scores=cleared, error=None)
                )
                if trace_id:
                    traces.add(trace_id)
                erased += 1
        self.counts["eval_results_erased"] = erased
        requests: set[str] = set()
        for batch in _batches(traces):
            requests |= set(self.session.scalars(select(TraceRow.request_id).where(TraceRow.trace_id.in_(batch))))
            requests |= set(
                self.session.scalars(select(RequestMetricRow.request_id).where(RequestMetricRow.trace_id.in_(batch)))
            )
        return requests

    # ---- the requests' own records --------------------------------------------------------------------------------

    def _erase_request_content(self, requests: set[str]) -> None:
        s = self.session
        spans = traces = observations = scores = 0
        for batch in _batches(self._trace_ids(requests)):
            spans += _rowcount(s.execute(delete(SpanRow).where(SpanRow.trace_id.in_(batch))))
        for batch in _batches(requests):
            traces += _rowcount(s.execute(delete(TraceRow).where(TraceRow.request_id.in_(batch))))
            observations += _rowcount(
                s.execute(delete(DriftObservationRow).where(DriftObservationRow.request_id.in_(batch)))
            )
            scores += _rowcount(
                s.execute(update(OnlineScoreRow).where(OnlineScoreRow.request_id.in_(batch)).values(details={}))
            )
            s.execute(
                update(OnlineScoreRow)
                .where(OnlineScoreRow.request_id.in_(batch), OnlineScoreRow.error.is_not(None))
                .values(error=ERASED)
            )
        self.counts.update(
            traces_deleted=traces,
            spans_deleted=spans,
            drift_observations_deleted=observations,
            online_scores_cleared=scores,
        )

    def _clear_feedback(self, requests: set[str]) -> None:
        """Text goes from the user's feedback and from anyone's feedback on the user's requests (it may quote them);
        kinds, values and flags stay, so rates stay."""
        cleared = _rowcount(
            self.session.execute(
                update(FeedbackRow).where(FeedbackRow.user == self.user_id).values(comment=None, correction=None)
            )
        )
        for batch in _batches(requests):
            others = update(FeedbackRow).where(
                FeedbackRow.request_id.in_(batch), FeedbackRow.user.is_distinct_from(self.user_id)
            )
            cleared += _rowcount(self.session.execute(others.values(comment=None, correction=None)))
        self.counts["feedback_cleared"] = cleared

    def _erase_held_answers(self, requests: set[str]) -> None:
        """Answers held for human review: the question, the answer and its citations go, the decision stays."""
        erased = 0
        held_items = select(ReviewItemRow.id, ReviewItemRow.details).where(ReviewItemRow.request_id.is_not(None))
        for item_id, details in list(self.session.execute(held_items)):
            held = (details or {}).get("held_answer")
            if not isinstance(held, dict):
                continue
            if held.get("request_id") not in requests and held.get("user") != self.user_id:
                continue
            held = {**held, "question": ERASED, "answer": ERASED, "citations": [], "user": self.tombstone}
            if "edited_answer" in held:
                held["edited_answer"] = ERASED
            new = {**details, "held_answer": held}
            self.session.execute(update(ReviewItemRow).where(ReviewItemRow.id == item_id).values(details=new))
            erased += 1
        self.counts["held_answers_erased"] = erased

    def _pseudonymise(self) -> None:
        s, user, tombstone = self.session, self.user_id, self.tombstone
        metrics = s.execute(update(RequestMetricRow).where(RequestMetricRow.user == user).values(user=tombstone))
        calls = s.execute(update(GatewayCallRow).where(GatewayCallRow.user == user).values(user=tombstone))
        feedback = s.execute(update(FeedbackRow).where(FeedbackRow.user == user).values(user=tombstone))
        self.counts.update(
            request_metrics_pseudonymised=_rowcount(metrics),
            gateway_calls_pseudonymised=_rowcount(calls),
            feedback_pseudonymised=_rowcount(feedback),
        )

    # ---- records that may quote the user --------------------------------------------------------------------------

    def _scrub_derived_records(self) -> None:
        """Records with no link to a request that may still quote one: replace the user's texts where they occur."""
        scrubbed = 0
        if self.texts:
            scrubbed += self._scrub_table(DriftReportRow, ("report",))
            scrubbed += self._scrub_table(TriggerFiringRow, ("inputs",))
            scrubbed += self._scrub_table(ActionRunRow, ("params", "result"))
            scrubbed += self._scrub_table(ReviewItemRow, ("title", "details", "resolution"))
        self.counts["derived_records_scrubbed"] = scrubbed

    def _scrub_table(self, table: type[_Derived], columns: tuple[str, ...]) -> int:
        changed = 0
        for row in list(self.session.execute(select(table.id, *(getattr(table, c) for c in columns)))):
            values = dict(zip(columns, row[1:], strict=True))
            new = {c: _scrub(v, self.texts) for c, v in values.items()}
            if new != values:
                self.session.execute(update(table).where(table.id == row[0]).values(**new))
                changed += 1
        return changed

    def _forget_embeddings(self) -> None:
        hashes = [hashlib.sha256(t.encode("utf-8", errors="surrogatepass")).hexdigest() for t in self.texts]
        deleted = 0
        for batch in _batches(hashes):
            deleted += _rowcount(
                self.session.execute(delete(EmbeddingCacheRow).where(EmbeddingCacheRow.text_hash.in_(batch)))
            )
        self.counts["embeddings_deleted"] = deleted


# ---- helpers --------------------------------------------------------------------------------------------------------


def _request_of(data: Any) -> str | None:
    metadata = data.get("metadata") if isinstance(data, dict) else None
    request = metadata.get("request_id") if isinstance(metadata, dict) else None
    return request if isinstance(request, str) else None


def _erased_item(data: dict[str, Any]) -> dict[str, Any]:
    """An example with its text gone and its shape kept (id, answerable, tags; the ids in its metadata)."""
    metadata = data.get("metadata") or {}
    kept = {k: metadata[k] for k in ("request_id", "trace_id", "app", "created_at") if k in metadata}
    return {
        **data,
        "input": ERASED,
        "expected": ERASED if data.get("expected") is not None else None,
        "facts": [],
        "sources": data.get("sources") or [],
        "assertions": [],
        "metadata": {**kept, "erased": True},
    }


def _scrub(value: Any, texts: set[str]) -> Any:
    """``value`` with every string equal to one of ``texts`` replaced, and the longer texts replaced inside.

    >>> _scrub({"examples": ["How many PTO days do I get?", "hi"]}, {"How many PTO days do I get?", "hi"})
    {'examples': ['[erased]', 'hi']}
    """
    if isinstance(value, str):
        stripped = value.strip()
        if len(stripped) >= _MIN_WHOLE and stripped in texts:
            return ERASED
        for text in texts:
            if len(text) >= _MIN_SUBSTRING and text in value:
                value = value.replace(text, ERASED)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, texts) for v in value]
    return value


def _batches(values: Iterable[T], size: int = _BATCH) -> Iterator[list[T]]:
    batch: list[T] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
