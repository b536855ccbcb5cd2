"""Guardrails at the input and output boundaries of a request.

A rail looks at a text and allows it, blocks it with a reason, or rewrites it (redaction). The pipeline runs the
rails in order and stops at the first block. With no rails configured it is a pass-through that still records its
decision, so every trace has the same shape whether or not rails are on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["GuardrailDecision", "GuardrailPipeline", "Rail", "RailResult"]


@dataclass(frozen=True)
class RailResult:
    allowed: bool
    text: str
    reason: str | None = None


@runtime_checkable
class Rail(Protocol):
    """One check. Register more through the ``llmops.rails`` entry point."""

    name: str

    def check(self, text: str) -> RailResult:
        """Allow ``text`` (possibly rewritten) or block it with a reason."""
        ...


@dataclass(frozen=True)
class GuardrailDecision:
    allowed: bool
    text: str
    rails: list[str] = field(default_factory=list)
    blocked_by: str | None = None
    reason: str | None = None


class GuardrailPipeline:
    def __init__(self, input_rails: Sequence[Rail] = (), output_rails: Sequence[Rail] = ()) -> None:
        self.input_rails = list(input_rails)
        self.output_rails = list(output_rails)

    def check_input(self, text: str) -> GuardrailDecision:
        return _run(self.input_rails, text)

    def check_output(self, text: str) -> GuardrailDecision:
        return _run(self.output_rails, text)


def _run(rails: Sequence[Rail], text: str) -> GuardrailDecision:
    ran: list[str] = []
    for rail in rails:
        ran.append(rail.name)
        result = rail.check(text)
        if not result.allowed:
            return GuardrailDecision(False, text, ran, blocked_by=rail.name, reason=result.reason)
        text = result.text
    return GuardrailDecision(True, text, ran)
