"""PII leakage: personal data in an answer that the user did not supply themselves.

An answer may repeat the user's own email address back to them; it may not hand out the phone number of a colleague
that sat in a retrieved chunk. So the answer's findings are compared with the texts the user supplied (the question,
earlier turns), and only values absent from those are reported. A value counts as supplied when it occurs in them
with case, spaces and separators ignored: the supplied texts need no PII scan of their own, which halves the cost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmops.guardrails._findings import Detector, Finding

__all__ = ["PiiLeakageDetector"]


class PiiLeakageDetector:
    """Reports PII in a text whose value does not occur in the ``context`` (the texts the user supplied).

    Example:
        >>> from llmops.guardrails import PiiDetector
        >>> leakage = PiiLeakageDetector(PiiDetector())
        >>> answer = "Ask bob@corp.com; we will reply to ana@example.com."
        >>> [f.value(answer) for f in leakage.detect(answer, ["I am ana@example.com, who runs payroll?"])]
        ['bob@corp.com']
    """

    name = "pii-leakage"

    def __init__(self, pii: Detector) -> None:
        """Wrap a PII detector (usually ``PiiDetector``, with or without NER)."""
        self._pii = pii

    def detect(self, text: str, context: Sequence[str]) -> list[Finding]:
        findings = self._pii.detect(text)
        if not findings:
            return []
        supplied = "\n".join(_normalise(source) for source in context)
        return [
            Finding(f.kind, f.start, f.end, f.score, self.name, "not in the user's input")
            for f in findings
            if _normalise(f.value(text)) not in supplied
        ]


def _normalise(value: str) -> str:
    """Case, spacing and separators do not make a different value ("+1 555-0100" == "+15550100")."""
    return re.sub(r"[\s\-().]", "", value).lower()
