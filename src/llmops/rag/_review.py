"""Human review of high-stakes answers: when an answer must wait for a person, and what the pipeline hands over.

An app's `HumanReviewConfig` names the conditions; `hold_reasons` is the one function that applies them, after the
output rails and the grounding check. A held answer goes to an `AnswerReviews` queue (the loop package's
`ReviewQueue` in a platform) and the caller gets `PENDING_REVIEW_ANSWER` instead; a reviewer releases or withholds it.

Only answers the model wrote are held. An abstention and a rail's block or fallback message are texts the platform
chose, with nothing in them for a person to approve, so they are returned at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from llmops._settings import HumanReviewConfig
from llmops.guardrails import RailDecision

__all__ = ["PENDING_REVIEW_ANSWER", "AnswerReviews", "HeldAnswer", "hold_reasons", "may_hold"]

#: What the caller reads instead of a held answer (``{review_id}`` is filled in).
PENDING_REVIEW_ANSWER = "This answer is awaiting review by a person (review {review_id})."
# A rail that blocks or falls back replaces the answer with its message: there is no answer left to hold.
_REPLACING_ACTIONS = frozenset({"block", "fallback"})


@dataclass(frozen=True)
class HeldAnswer:
    """An answer a person must release before its caller sees it.

    ``question`` is the question as the model saw it (after the input rails' redaction); ``answer`` is the text the
    caller gets if it is released unchanged (pseudonyms restored); ``citations`` are the answer's sources as JSON
    objects (`Citation` fields); ``reasons`` say which conditions held it (see `hold_reasons`).
    """

    request_id: str
    trace_id: str
    app: str
    question: str
    answer: str
    citations: list[dict[str, Any]]
    reasons: list[str]
    user: str | None = None
    grounding_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AnswerReviews(Protocol):
    """Where held answers wait for a person. `llmops.loop.ReviewQueue` is the platform's."""

    def hold(self, answer: HeldAnswer) -> str:
        """Store ``answer`` durably for review and return the review id the caller is told."""
        ...


def may_hold(config: HumanReviewConfig) -> bool:
    """Whether ``config`` can hold any answer (if not, answers stream as they are generated)."""
    return bool(config.always or config.on_rails or config.on_unsupported_claims or config.below_grounding is not None)


def hold_reasons(
    config: HumanReviewConfig,
    *,
    decisions: Iterable[RailDecision],
    grounding: float | None,
    unsupported: int | None,
) -> list[str]:
    """Why an answer must wait for a person; empty when it may be released.

    ``decisions`` are the rails' decisions of every stage of the request; ``grounding`` is the grounding rail's score
    and ``unsupported`` its count of unsupported claims, both None when no grounding check ran. A condition that
    cannot be evaluated holds: with ``below_grounding`` or ``on_unsupported_claims`` set and no grounding check (the
    policy has no grounding rail, or it was skipped), the answer is held rather than released unchecked.

    >>> hold_reasons(HumanReviewConfig(below_grounding=0.6), decisions=[], grounding=0.4, unsupported=1)
    ['grounding 0.40 < 0.6']
    """
    reasons = ["always"] if config.always else []
    wanted = set(config.on_rails)
    flagged = sorted(
        {d.rail for d in decisions if d.rail in wanted and d.triggered and d.action not in _REPLACING_ACTIONS}
    )
    reasons.extend(f"rail {rail}" for rail in flagged)
    if config.on_unsupported_claims:
        if unsupported is None:
            reasons.append("unsupported claims not checked")
        elif unsupported > 0:
            reasons.append(f"{unsupported} unsupported claim{'s' if unsupported > 1 else ''}")
    if config.below_grounding is not None:
        if grounding is None:
            reasons.append("grounding not checked")
        elif grounding < config.below_grounding:
            reasons.append(f"grounding {grounding:.2f} < {config.below_grounding:g}")
    return reasons
