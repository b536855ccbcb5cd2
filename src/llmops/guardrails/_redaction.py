"""Rewrite found spans: irreversible redaction (``<EMAIL_ADDRESS>``) or reversible pseudonymisation (``<PERSON_1>``).

Both take the findings of any detector, so what is hidden is decided by detection and policy, not here. Overlapping
findings are resolved first (best score wins), so a span is never rewritten twice.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

from llmops.guardrails._findings import Finding
from llmops.guardrails._pii import resolve_overlaps

__all__ = ["Pseudonymizer", "redact"]

_PLACEHOLDER = re.compile(r"<\s*([A-Z][A-Z_]*?)_(\d+)\s*>")


def redact(text: str, findings: Iterable[Finding], *, template: str = "<{kind}>") -> str:
    """``text`` with every finding replaced by ``template`` formatted with the finding's ``kind``.

    Example:
        >>> from llmops.guardrails import PiiDetector
        >>> text = "Write to ana@example.com"
        >>> redact(text, PiiDetector().detect(text))
        'Write to <EMAIL_ADDRESS>'
    """
    pieces: list[str] = []
    position = 0
    for finding in resolve_overlaps(findings):
        pieces.append(text[position : finding.start])
        pieces.append(template.format(kind=finding.kind))
        position = finding.end
    pieces.append(text[position:])
    return "".join(pieces)


class Pseudonymizer:
    """Replaces findings with numbered placeholders and puts the original values back into later text.

    The same value always gets the same placeholder for the life of the instance, so a conversation stays coherent
    ("<PERSON_1> wrote to <PERSON_2>; <PERSON_1> is waiting"). Keep one instance per conversation, or save
    ``mapping`` with the conversation and pass it back in. The mapping holds the personal data itself: store it where
    the conversation is stored, never in a trace or a log (``repr`` shows counts only).

    Example:
        >>> from llmops.guardrails import PiiDetector
        >>> pii, names = PiiDetector(), Pseudonymizer()
        >>> question = "Is ana@example.com on the list?"
        >>> masked = names.pseudonymize(question, pii.detect(question))
        >>> masked
        'Is <EMAIL_ADDRESS_1> on the list?'
        >>> names.restore("Yes, <EMAIL_ADDRESS_1> is subscribed.")
        'Yes, ana@example.com is subscribed.'
    """

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        """Start empty, or resume from the ``mapping`` (placeholder -> value) of an earlier instance.

        Raises:
            ValueError: A key of ``mapping`` is not a placeholder such as ``<PERSON_1>``.
        """
        self._values: dict[str, str] = {}
        self._placeholders: dict[tuple[str, str], str] = {}
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()
        for placeholder, value in (mapping or {}).items():
            match = _PLACEHOLDER.fullmatch(placeholder)
            if match is None:
                raise ValueError(f"not a placeholder: {placeholder!r} (expected e.g. '<PERSON_1>')")
            kind, number = match.group(1), int(match.group(2))
            self._values[placeholder] = value
            self._placeholders[(kind, _normalise(kind, value))] = placeholder
            self._counters[kind] = max(self._counters.get(kind, 0), number)

    def __repr__(self) -> str:
        return f"Pseudonymizer({len(self._values)} placeholders)"

    @property
    def mapping(self) -> dict[str, str]:
        """A copy of placeholder -> original value, e.g. ``{"<PERSON_1>": "Ana Ruiz"}``."""
        with self._lock:
            return dict(self._values)

    def pseudonymize(self, text: str, findings: Iterable[Finding]) -> str:
        """``text`` with each finding replaced by its placeholder (``<KIND_N>``), numbering new values as it goes."""
        pieces: list[str] = []
        position = 0
        with self._lock:
            for finding in resolve_overlaps(findings):
                pieces.append(text[position : finding.start])
                pieces.append(self._placeholder_for(finding.kind, finding.value(text), text))
                position = finding.end
        pieces.append(text[position:])
        return "".join(pieces)

    def placeholder(self, kind: str, value: str, text: str) -> str:
        """The placeholder of ``value`` (a new one if it is new), never one that already occurs in ``text``."""
        with self._lock:
            return self._placeholder_for(kind, value, text)

    def restore(self, text: str) -> str:
        """``text`` with every known placeholder replaced by its value; unknown placeholders are left as they are.

        Tolerates the spacing models introduce (``< PERSON_1 >``).
        """
        with self._lock:
            values = self._values

            def original(match: re.Match[str]) -> str:
                return values.get(f"<{match.group(1)}_{match.group(2)}>", match.group())

            return _PLACEHOLDER.sub(original, text)

    def _placeholder_for(self, kind: str, value: str, text: str) -> str:
        key = (kind, _normalise(kind, value))
        existing = self._placeholders.get(key)
        if existing is not None:
            return existing
        number = self._counters.get(kind, 0)
        while True:
            number += 1
            placeholder = f"<{kind}_{number}>"
            # A user who typed "<PERSON_1>" themselves must not have it "restored" into someone's name.
            if placeholder not in text:
                break
        self._counters[kind] = number
        self._placeholders[key] = placeholder
        self._values[placeholder] = value
        return placeholder


def _normalise(kind: str, value: str) -> str:
    """The form under which two mentions count as the same value (case-blind emails, digits-only numbers)."""
    if kind in ("EMAIL_ADDRESS", "URL"):
        return value.strip().lower()
    if kind in ("PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "US_ITIN"):
        return re.sub(r"[^0-9A-Za-z]", "", value).upper()
    return " ".join(value.split())
