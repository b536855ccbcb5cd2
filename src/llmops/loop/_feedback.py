"""Feedback on responses: thumbs, ratings, corrections and flags, by request id, linked to the request's trace.

Feedback is written to the store before it is acknowledged. Negative feedback keeps the request's trace even when
sampling had dropped its spans, and is announced to listeners (the trigger engine counts it).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, select

from llmops.loop._tables import FeedbackRow
from llmops.observability import Aggregate
from llmops.observability._tables import RequestMetricRow
from llmops.store import Journal, Store

__all__ = ["FEEDBACK_KINDS", "Feedback", "FeedbackError", "FeedbackStore", "UnknownRequestError"]

FEEDBACK_KINDS = ("thumbs", "rating", "correction", "flag")
_MAX_TEXT = 10_000
_MAX_FLAG = 64


class FeedbackError(ValueError):
    """Feedback that cannot be stored as given; the message says why."""


class UnknownRequestError(LookupError):
    pass


@dataclass(frozen=True)
class Feedback:
    id: str
    request_id: str
    trace_id: str | None
    app: str | None
    created_at: datetime
    kind: str
    value: float | None
    comment: str | None
    correction: str | None
    flag: str | None
    user: str | None

    @property
    def negative(self) -> bool:
        """A thumbs down, a rating of 1 or 2, a correction or a flag."""
        if self.kind == "thumbs":
            return self.value == 0.0
        if self.kind == "rating":
            return self.value is not None and self.value <= 2
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "app": self.app,
            "created_at": _aware(self.created_at).isoformat(),
            "kind": self.kind,
            "value": self.value,
            "comment": self.comment,
            "correction": self.correction,
            "flag": self.flag,
            "user": self.user,
            "negative": self.negative,
        }


FeedbackListener = Callable[[Feedback], None]


class FeedbackStore:
    """>>> feedback.record("req_1a2b", kind="thumbs", value="down", comment="wrong number of days")  # doctest: +SKIP"""

    def __init__(self, store: Store, journal: Journal, *, keep_trace: Callable[[str], bool] | None = None) -> None:
        self._store = store
        self._journal = journal
        self._keep_trace = keep_trace
        self._listeners: list[FeedbackListener] = []

    def subscribe(self, listener: FeedbackListener) -> None:
        self._listeners.append(listener)

    def record(
        self,
        request_id: str,
        *,
        kind: Literal["thumbs", "rating", "correction", "flag"] | str,
        value: float | str | bool | None = None,
        comment: str | None = None,
        correction: str | None = None,
        flag: str | None = None,
        user: str | None = None,
    ) -> Feedback:
        """Store feedback on the response to ``request_id``. Raises `FeedbackError` for malformed feedback and
        `UnknownRequestError` when no such request was served."""
        number = _validate(kind, value, comment, correction, flag, user)
        request = self._request(request_id)
        feedback = Feedback(
            id="fb_" + secrets.token_hex(8),
            request_id=request_id,
            trace_id=request[0],
            app=request[1],
            created_at=datetime.now(UTC),
            kind=kind,
            value=number,
            comment=comment,
            correction=correction,
            flag=flag,
            user=user,
        )
        with self._store.session() as session:
            session.add(FeedbackRow(**{k: getattr(feedback, k) for k in _FIELDS}))
        if feedback.negative and self._keep_trace is not None:
            self._keep_trace(request_id)
        for listener in self._listeners:
            listener(feedback)
        return feedback

    def _request(self, request_id: str) -> tuple[str | None, str | None]:
        query = select(RequestMetricRow.trace_id, RequestMetricRow.app).where(RequestMetricRow.request_id == request_id)
        for attempt in range(2):
            with self._store.session() as session:
                found = session.execute(query).first()
            if found is not None:
                return found[0], found[1]
            if attempt == 0:
                self._journal.flush()  # answered moments ago: its metrics row may still be in the journal
        raise UnknownRequestError(f"no request {request_id!r} was served (or it was deleted by retention)")

    def find(
        self,
        *,
        request_id: str | None = None,
        app: str | None = None,
        kind: str | None = None,
        negative: bool | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Feedback]:
        query = select(FeedbackRow).order_by(FeedbackRow.created_at.desc())
        if request_id is not None:
            query = query.where(FeedbackRow.request_id == request_id)
        if app is not None:
            query = query.where(FeedbackRow.app == app)
        if kind is not None:
            query = query.where(FeedbackRow.kind == kind)
        if since is not None:
            query = query.where(FeedbackRow.created_at >= since)
        found: list[Feedback] = []
        with self._store.session() as session:
            for row in session.scalars(query.limit(limit if negative is None else limit * 20)):
                item = Feedback(**{k: getattr(row, k) for k in _FIELDS})
                if negative is None or item.negative == negative:
                    found.append(item)
                if len(found) >= limit:
                    break
        return found

    def delete_older(self, cutoff: datetime, *, app: str | None) -> int:
        """Delete ``app``'s feedback (feedback on requests without an app, for None) given before ``cutoff``
        (retention); returns how many went."""
        app_is = FeedbackRow.app == app if app is not None else FeedbackRow.app.is_(None)
        with self._store.session() as session:
            gone = session.execute(delete(FeedbackRow).where(app_is, FeedbackRow.created_at < cutoff))
            return int(getattr(gone, "rowcount", 0) or 0)

    def negative_request_ids(self, *, app: str | None = None, since: datetime | None = None) -> list[str]:
        """Requests that received negative feedback: a dataset source (``eval dataset from-traces --feedback``)."""
        return list(dict.fromkeys(f.request_id for f in self.find(app=app, since=since, negative=True, limit=10_000)))

    def thumbs_down_rate(
        self, *, app: str | None = None, window_s: float = 3600.0, now: datetime | None = None
    ) -> Aggregate:
        """Share of thumbs that are down in the window (a metric triggers can watch)."""
        now = now or datetime.now(UTC)
        query = select(FeedbackRow.value, func.count()).where(
            FeedbackRow.kind == "thumbs", FeedbackRow.created_at >= now - timedelta(seconds=window_s)
        )
        if app is not None:
            query = query.where(FeedbackRow.app == app)
        with self._store.session() as session:
            counts = {value: int(n) for value, n in session.execute(query.group_by(FeedbackRow.value))}
        total = sum(counts.values())
        return Aggregate(counts.get(0.0, 0) / total if total else None, total)

    def negative_count(
        self, *, app: str | None = None, window_s: float = 3600.0, now: datetime | None = None
    ) -> Aggregate:
        now = now or datetime.now(UTC)
        items = self.find(app=app, since=now - timedelta(seconds=window_s), negative=True, limit=100_000)
        return Aggregate(float(len(items)), len(items))


_FIELDS = (
    "id",
    "request_id",
    "trace_id",
    "app",
    "created_at",
    "kind",
    "value",
    "comment",
    "correction",
    "flag",
    "user",
)


def _validate(
    kind: str,
    value: float | str | bool | None,
    comment: str | None,
    correction: str | None,
    flag: str | None,
    user: str | None,
) -> float | None:
    if kind not in FEEDBACK_KINDS:
        raise FeedbackError(f"unknown feedback kind {kind!r}; use one of {', '.join(FEEDBACK_KINDS)}")
    for name, text, cap in (
        ("comment", comment, _MAX_TEXT),
        ("correction", correction, _MAX_TEXT),
        ("flag", flag, _MAX_FLAG),
        ("user", user, 200),
    ):
        if text is not None and len(text) > cap:
            raise FeedbackError(f"{name} is {len(text)} characters; at most {cap} are stored")
    if kind == "thumbs":
        if value in ("up", True, 1, 1.0):
            return 1.0
        if value in ("down", False, 0, 0.0):
            return 0.0
        raise FeedbackError(f"thumbs feedback needs value 'up' or 'down', not {value!r}")
    if kind == "rating":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 5:
            raise FeedbackError(f"a rating is a number from 1 to 5, not {value!r}")
        return float(value)
    if kind == "correction" and not (correction or "").strip():
        raise FeedbackError("correction feedback needs the corrected answer in 'correction'")
    if kind == "flag" and not (flag or "").strip():
        raise FeedbackError("flag feedback needs a 'flag' (e.g. harmful, wrong, leaked_data)")
    if value is not None:
        raise FeedbackError(f"{kind} feedback takes no value")
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
