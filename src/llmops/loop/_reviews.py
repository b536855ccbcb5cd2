"""Review items: what a trigger or runbook wants a person to look at (a regressed prompt, a flagged answer), and
answers the RAG pipeline holds until a person releases them.

A held answer is a review item whose details carry it under ``held_answer``, a key `ReviewQueue.open` refuses, so
an item a rule opens can never pose as a held answer. It stays ``open`` while it waits, then a reviewer's verdict
makes it ``released`` (unchanged or edited) or ``withheld``; other items end ``resolved`` or ``dismissed``. Each
verdict on an answer is audited on the answer itself (``answer.release`` / ``answer.withhold`` on the request id,
with the held and the released text as hashes), so one request id leads to who released what.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, select, update

from llmops.loop._tables import ReviewItemRow
from llmops.rag import HeldAnswer
from llmops.store import AuditHook, Store

__all__ = ["VERDICTS", "ReviewQueue", "Verdict"]

Verdict = Literal["release", "withhold"]
VERDICTS: tuple[Verdict, ...] = ("release", "withhold")
_HELD = "held_answer"
_OUTCOMES = {"open": "pending_review", "released": "released", "withheld": "withheld"}
_MAX_ANSWER_CHARS = 100_000


class ReviewQueue:
    """Review items in the platform's store. ``audit`` records each verdict on a held answer.

    >>> review_id = reviews.hold(held)                                    # doctest: +SKIP
    >>> reviews.resolve(review_id, by="dana", verdict="release")         # doctest: +SKIP
    >>> reviews.answer(held.request_id)["status"]                        # doctest: +SKIP
    'released'
    """

    def __init__(self, store: Store, *, audit: AuditHook | None = None) -> None:
        self._store = store
        self._audit = audit

    def open(self, title: str, details: dict[str, Any] | None = None, *, firing_id: str | None = None) -> str:
        if not title.strip():
            raise ValueError("a review item needs a title")
        if details and _HELD in details:
            raise ValueError(f"the details key {_HELD!r} is reserved for answers held for review")
        return self._add(title, details or {}, firing_id)

    def hold(self, answer: HeldAnswer) -> str:
        """Queue ``answer`` until a person releases or withholds it; returns the review id."""
        reasons = ", ".join(answer.reasons) or "held"
        # The request and the app on top as well: that is where access control finds an item's project.
        details = {"request_id": answer.request_id, "app": answer.app, _HELD: answer.to_dict()}
        return self._add(f"Answer of {answer.app} held for review: {reasons}", details, None, answer.request_id)

    def _add(self, title: str, details: dict[str, Any], firing_id: str | None, request_id: str | None = None) -> str:
        item_id = "rev_" + secrets.token_hex(8)
        with self._store.session() as session:
            session.add(
                ReviewItemRow(
                    id=item_id,
                    created_at=datetime.now(UTC),
                    title=title[:500],
                    details=details,
                    status="open",
                    firing_id=firing_id,
                    request_id=request_id,
                )
            )
        return item_id

    def resolve(
        self,
        item_id: str,
        *,
        by: str,
        resolution: str = "",
        dismiss: bool = False,
        verdict: Verdict | None = None,
        answer: str | None = None,
    ) -> dict[str, Any]:
        """Close an open item as ``by``. A held answer needs a ``verdict`` (``dismiss`` alone withholds it);
        ``answer`` releases an edited text in place of the generated one. ``resolution`` is the reviewer's note.

        Raises LookupError for an unknown item and ValueError for one already closed or a verdict that does not fit
        the item. When two reviewers decide at once, one wins and the other gets the ValueError.
        """
        if not by.strip():
            raise ValueError("say who reviews: a verdict needs the reviewer's name")
        with self._store.session() as session:
            row = session.get(ReviewItemRow, item_id)
            if row is None:
                raise LookupError(f"no review item {item_id!r}")
            if row.status != "open":
                raise ValueError(f"review item {item_id} is already {row.status}")
            details = row.details if isinstance(row.details, dict) else {}
            held = details.get(_HELD)
            status, new_details = _verdict(item_id, held, dismiss, verdict, answer)
            values: dict[str, Any] = {"status": status, "resolved_by": by, "resolved_at": datetime.now(UTC),
                                      "resolution": resolution}  # fmt: skip
            if new_details is not None:
                values["details"] = {**details, _HELD: new_details}
            # Conditional on the item still being open, so of two reviewers deciding at once exactly one wins.
            done = cast(
                "CursorResult[Any]",
                session.execute(
                    update(ReviewItemRow)
                    .where(ReviewItemRow.id == item_id, ReviewItemRow.status == "open")
                    .values(**values)
                    .execution_options(synchronize_session=False)
                ),
            )
            if done.rowcount != 1:
                raise ValueError(f"review item {item_id} was closed by someone else just now")
            session.expire(row)
            item = _as_dict(row)
        if held is not None and self._audit is not None:
            final, released = item["details"][_HELD], status == "released"
            self._audit(
                by,
                "answer.release" if released else "answer.withhold",
                "rag_answer",
                held["request_id"],
                before=held["answer"],
                after=final.get("edited_answer", held["answer"]) if released else None,
                details={"review_id": item_id, "app": held.get("app"), "edited": "edited_answer" in final},
            )
        return item

    def answer(self, request_id: str) -> dict[str, Any] | None:
        """What the caller of ``request_id`` may know of its held answer: ``status`` (``pending_review``,
        ``released`` or ``withheld``), the answer and citations only once released, who decided and when.
        None when the request's answer was not held."""
        query = (
            select(ReviewItemRow)
            .where(ReviewItemRow.request_id == request_id)
            .order_by(ReviewItemRow.created_at.desc())
            .limit(1)
        )
        with self._store.session() as session:
            row = session.scalars(query).first()
            if row is None:
                return None
            held = row.details[_HELD]
            status = _OUTCOMES.get(row.status, "withheld")  # an item closed any other way was not released
            outcome: dict[str, Any] = {
                "request_id": request_id,
                "review_id": row.id,
                "app": held.get("app"),
                "status": status,
                "answer": None,
                "citations": None,
                "edited": None,
                "reviewer": row.resolved_by,
                "held_at": row.created_at.isoformat(),
                "decided_at": row.resolved_at.isoformat() if row.resolved_at else None,
            }
            if status == "released":
                edited = held.get("edited_answer")
                outcome.update(answer=edited or held["answer"], citations=held["citations"], edited=edited is not None)
            return outcome

    def list(self, *, status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
        query = select(ReviewItemRow).order_by(ReviewItemRow.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(ReviewItemRow.status == status)
        with self._store.session() as session:
            return [_as_dict(r) for r in session.scalars(query)]


def _verdict(
    item_id: str, held: Any, dismiss: bool, verdict: Verdict | None, answer: str | None
) -> tuple[str, dict[str, Any] | None]:
    """The item's new status, and a held answer's new details (with the edited text) when they change."""
    if held is None:
        if verdict is not None or answer is not None:
            raise ValueError(f"review item {item_id} holds no answer: release and withhold do not apply")
        return ("dismissed" if dismiss else "resolved"), None
    if verdict is None and dismiss:
        verdict = "withhold"
    if verdict not in VERDICTS:
        raise ValueError(f"review item {item_id} holds an answer: the verdict must be release or withhold")
    if verdict == "withhold":
        if answer is not None:
            raise ValueError("an edited answer is released, not withheld")
        return "withheld", None
    if answer is None:
        return "released", None
    if not answer.strip() or len(answer) > _MAX_ANSWER_CHARS:
        raise ValueError(f"an edited answer must have 1 to {_MAX_ANSWER_CHARS} characters")
    return "released", {**held, "edited_answer": answer}


def _as_dict(row: ReviewItemRow) -> dict[str, Any]:
    details = row.details if isinstance(row.details, dict) else {}
    return {
        "id": row.id,
        "kind": "answer" if _HELD in details else "item",
        "created_at": row.created_at.isoformat(),
        "title": row.title,
        "details": row.details,
        "status": row.status,
        "firing_id": row.firing_id,
        "resolved_by": row.resolved_by,
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "resolution": row.resolution,
    }
