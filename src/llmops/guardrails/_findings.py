"""What a detector reports, and the two shapes a detector can have.

A detector looks at a text and returns findings: typed character spans with a score. It never rewrites the text and
never decides what to do; the rail that wraps it applies a threshold and an action (block, redact, warn). Keeping
detection apart from action is what lets one detector serve an input rail, an output rail and an offline evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ContextualDetector", "Detector", "Finding"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector found: ``text[start:end]`` is of ``kind`` with confidence ``score``.

    A finding holds offsets, never the matched text, so logging or tracing a finding cannot leak the personal data or
    secret it points at. Slice the original text when the value itself is needed (``finding.value(text)``).

    Attributes:
        kind: What was found, upper case: an entity type (``EMAIL_ADDRESS``, ``PERSON``, ``API_KEY``) or a category
            (``PROMPT_INJECTION``, ``INSULT``, ``UNSUPPORTED_CLAIM``).
        start: Offset of the first character, inclusive.
        end: Offset after the last character, exclusive. A finding about the whole text spans ``0..len(text)``.
        score: Confidence in ``[0, 1]``; comparable across findings of one detector, not across detectors.
        detector: ``name`` of the detector that produced it.
        reason: A short explanation that contains no part of the text, e.g. ``"luhn checksum"``.
    """

    kind: str
    start: int
    end: int
    score: float
    detector: str
    reason: str = ""

    def value(self, text: str) -> str:
        """The span of ``text`` this finding points at (``text`` must be the text that was scanned)."""
        return text[self.start : self.end]

    def overlaps(self, other: Finding) -> bool:
        """Whether the two spans share at least one character."""
        return self.start < other.end and other.start < self.end


@runtime_checkable
class Detector(Protocol):
    """Finds things in one text (the seam for guardrail detectors; an entry-point group can register more).

    Example:
        >>> from llmops.guardrails import PiiDetector
        >>> detector = PiiDetector()
        >>> [(f.kind, f.start, f.end) for f in detector.detect("Mail me at ana@example.com")]
        [('EMAIL_ADDRESS', 11, 26)]
    """

    name: str

    def detect(self, text: str) -> list[Finding]:
        """Findings in ``text``, ordered by start offset; an empty list when there is nothing to report."""
        ...


@runtime_checkable
class ContextualDetector(Protocol):
    """Judges a text against reference texts, e.g. an answer against the retrieved chunks it should rest on."""

    name: str

    def detect(self, text: str, context: Sequence[str]) -> list[Finding]:
        """Findings in ``text`` given ``context``; what the context means is the detector's to say."""
        ...


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Order by start, longer spans first, so callers can walk a text left to right."""
    return sorted(findings, key=lambda f: (f.start, -(f.end - f.start), f.kind))
