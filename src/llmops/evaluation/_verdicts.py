"""Reading a judge's verdict out of what a model wrote.

Models asked for JSON do not always write only JSON: they wrap it in ```json fences, put a sentence before or after
it, use single quotes or a trailing comma, give the score as a string ("4"), or skip JSON and write "Score: 4/5".
All of these are read. What cannot be used is refused with a `VerdictParseError` whose ``kind`` says why (empty
output, a refusal, a score out of range, no verdict at all), so the judge can ask again with a precise correction and
a report can count failures by cause.

>>> parse_verdict('Sure! ```json\\n{"score": "4", "reason": "Mostly right."}\\n```', scale=5)
Verdict(score=4, reason='Mostly right.', scale=5)
>>> parse_verdict("Score: 2/5 - misses the key fact", scale=5).score
2
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "PairwiseChoice",
    "Verdict",
    "VerdictParseError",
    "json_objects",
    "parse_pairwise_verdict",
    "parse_verdict",
]

ParseFailure = Literal["empty", "refusal", "out_of_range", "invalid_score", "no_verdict"]
Winner = Literal["a", "b", "tie"]

# Past this a model is rambling; scanning every "{" of a huge text for JSON would cost more than the answer is worth.
_MAX_SCAN_CHARS = 20_000
_MAX_OBJECT_STARTS = 50
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_SCORE_LINE = re.compile(
    r"(?im)^[\s*#>_-]*(?:final\s+|overall\s+)?(?:score|rating|grade)\**\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)"
    r"(?:\s*(?:/|out\s+of)\s*(\d+))?"
)
# A score field in JSON cut short (max_tokens hit inside the reason): the score is already there.
_SCORE_FIELD = re.compile(r"""["']?(?:score|rating)["']?\s*:\s*["']?(-?\d+(?:\.\d+)?)""", re.IGNORECASE)
_WINNER_LINE = re.compile(
    r"(?im)^[\s*#>_-]*(?:final\s+)?(?:winner|verdict|better(?:\s+answer)?|choice)\**\s*[:=]\s*\**\s*"
    r"(?:answer|output|response)?\s*[\"'\[(]*\s*(?:it\s+is\s+|it's\s+)?(?:a\s+(?=tie|draw))?(a(?!\s+(?:tie|draw))|b|tie|draw|equal|neither|both)\b"
)
_BRACKETED = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)  # MT-Bench's "[[A]]" / "[[B]]" / "[[C]]" (tie)
_REFUSAL = re.compile(
    r"\b(?:I\s+(?:cannot|can't|can\s+not|am\s+unable\s+to|'m\s+unable\s+to|won't|will\s+not|am\s+not\s+able\s+to)"
    r"|I'm\s+sorry|I\s+am\s+sorry|as\s+an\s+AI(?:\s+language\s+model)?)\b",
    re.IGNORECASE,
)
_WINNER_WORDS: dict[str, Winner] = {
    "a": "a", "answer a": "a", "answer_a": "a", "output a": "a", "output_a": "a", "response a": "a",
    "assistant a": "a", "first": "a", "1": "a",
    "b": "b", "answer b": "b", "answer_b": "b", "output b": "b", "output_b": "b", "response b": "b",
    "assistant b": "b", "second": "b", "2": "b",
    "tie": "tie", "draw": "tie", "equal": "tie", "both": "tie", "neither": "tie", "same": "tie", "c": "tie",
}  # fmt: skip


class VerdictParseError(ValueError):
    """The judge's output holds no usable verdict. ``kind`` is the cause; the message says what was wrong."""

    def __init__(self, kind: ParseFailure, message: str) -> None:
        super().__init__(message)
        self.kind: ParseFailure = kind


@dataclass(frozen=True)
class Verdict:
    """A score on a 1..``scale`` rubric and the judge's reason for it."""

    score: int
    reason: str
    scale: int

    @property
    def value(self) -> float:
        """The score mapped onto [0, 1]: ``(score - 1) / (scale - 1)``."""
        return (self.score - 1) / (self.scale - 1)


@dataclass(frozen=True)
class PairwiseChoice:
    """Which of two answers one judge call preferred (in the order it was shown them)."""

    winner: Winner
    reason: str


def parse_verdict(text: str, scale: int) -> Verdict:
    """Read ``{"score": 1..scale, "reason": "..."}`` from ``text``, or a "Score: N[/scale]" line.

    Raises:
        VerdictParseError: ``empty``, ``refusal``, ``out_of_range`` (including a score given out of another scale),
            ``invalid_score`` (not a whole number) or ``no_verdict``.
    """
    if scale < 2:
        raise ValueError(f"a rubric scale needs at least two points, got {scale}")
    body = _nonempty(text)
    missing_field = False
    for obj in json_objects(body):
        key = _first_key(obj, ("score", "rating", "grade"))
        if key is None:
            missing_field = True
            continue
        reason = _reason(obj)
        if obj[key] is None and _REFUSAL.search(reason):
            raise VerdictParseError("refusal", f"the judge refused: {_clip(reason)}")
        return Verdict(_whole_score(obj[key], scale), reason, scale)
    line = _SCORE_LINE.search(body)
    if line is not None:
        out_of = int(line.group(2)) if line.group(2) else None
        if out_of is not None and out_of != scale:
            raise VerdictParseError("out_of_range", f"the score is given out of {out_of}, the rubric is 1..{scale}")
        before, after = body[: line.start()].strip(), body[line.end() :].strip().lstrip("-–—:").strip()
        return Verdict(_whole_score(line.group(1), scale), " ".join(p for p in (before, after) if p), scale)
    field = _SCORE_FIELD.search(body)
    if field is not None:
        return Verdict(_whole_score(field.group(1), scale), "", scale)
    _refuse_if_refusal(body)
    if missing_field:
        raise VerdictParseError("no_verdict", "the JSON object has no 'score' field")
    raise VerdictParseError("no_verdict", "no JSON verdict and no 'Score: N' line in the output")


def parse_pairwise_verdict(text: str) -> PairwiseChoice:
    """Read ``{"winner": "a" | "b" | "tie", "reason": "..."}`` from ``text``, or a "Winner: A" line, or "[[A]]".

    Raises:
        VerdictParseError: ``empty``, ``refusal``, ``invalid_score`` (a winner that is not a, b or tie) or
            ``no_verdict``.
    """
    body = _nonempty(text)
    for obj in json_objects(body):
        key = _first_key(obj, ("winner", "better", "choice", "verdict", "preferred"))
        if key is None:
            continue
        value = obj[key]
        winner = _WINNER_WORDS.get(str(value).strip().strip("[]()\"'.").lower()) if value is not None else None
        if winner is None:
            raise VerdictParseError("invalid_score", f"the winner must be 'a', 'b' or 'tie', got {_clip(str(value))}")
        return PairwiseChoice(winner, _reason(obj))
    match = _WINNER_LINE.search(body) or _BRACKETED.search(body)
    if match is not None:
        return PairwiseChoice(_WINNER_WORDS[match.group(1).lower()], body)
    _refuse_if_refusal(body)
    raise VerdictParseError("no_verdict", "no JSON verdict with a 'winner' and no 'Winner: A' line in the output")


# ---- shared ---------------------------------------------------------------------------------------------------


def _nonempty(text: str) -> str:
    body = text.strip()[:_MAX_SCAN_CHARS]
    if not body:
        raise VerdictParseError("empty", "the judge returned no text")
    return body


def _refuse_if_refusal(body: str) -> None:
    if _REFUSAL.search(body[:400]):  # a refusal says so up front; "I can't" deep in a long text is not one
        raise VerdictParseError("refusal", f"the judge refused: {_clip(body)}")


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """JSON objects in ``text``, most likely first: fenced blocks, then each ``{`` of the text in order (which
    finds JSON with prose around it, and objects nested in others). Each is read strictly, then once more with
    single quotes and trailing commas repaired."""
    decoder = json.JSONDecoder()
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    candidates.append(text)
    for candidate in candidates:
        start = candidate.find("{")
        for _ in range(_MAX_OBJECT_STARTS):
            if start < 0:
                break
            obj = _decode_at(decoder, candidate, start)
            if obj is not None:
                yield obj
            start = candidate.find("{", start + 1)


def _decode_at(decoder: json.JSONDecoder, text: str, start: int) -> dict[str, Any] | None:
    try:
        obj, _ = decoder.raw_decode(text, start)
    except json.JSONDecodeError:
        end = text.find("}", start)
        last = text.rfind("}")
        obj = None
        for stop in dict.fromkeys((end, last)):  # the nearest close brace, then the last one
            if stop < 0:
                continue
            repaired = _TRAILING_COMMA.sub(r"\1", text[start : stop + 1])
            if '"' not in repaired:
                repaired = repaired.replace("'", '"')
            try:
                obj = json.loads(repaired)
                break
            except json.JSONDecodeError:
                continue
    return obj if isinstance(obj, dict) else None


def _first_key(obj: dict[str, Any], names: tuple[str, ...]) -> str | None:
    lowered = {str(k).strip().lower(): k for k in obj}
    return next((lowered[n] for n in names if n in lowered), None)


def _reason(obj: dict[str, Any]) -> str:
    key = _first_key(obj, ("reason", "reasoning", "explanation", "rationale", "justification"))
    return str(obj[key]).strip() if key is not None and obj[key] is not None else ""


def _whole_score(raw: Any, scale: int) -> int:
    if isinstance(raw, bool) or raw is None:
        raise VerdictParseError("invalid_score", f"the score must be a whole number 1..{scale}, got {raw!r}")
    text = str(raw).strip()
    if "/" in text:  # "4/5" as a string
        text, _, out_of = text.partition("/")
        if out_of.strip().isdigit() and int(out_of) != scale:
            raise VerdictParseError(
                "out_of_range", f"the score is given out of {out_of.strip()}, the rubric is 1..{scale}"
            )
    try:
        number = float(text)
    except ValueError:
        raise VerdictParseError(
            "invalid_score", f"the score must be a whole number 1..{scale}, got {_clip(repr(raw))}"
        ) from None
    if not number.is_integer():
        raise VerdictParseError("invalid_score", f"the score must be a whole number 1..{scale}, got {raw!r}")
    if not 1 <= number <= scale:
        raise VerdictParseError("out_of_range", f"the score {int(number)} is outside the rubric's 1..{scale}")
    return int(number)


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
