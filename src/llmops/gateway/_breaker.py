"""A circuit breaker per upstream: stop sending to one that keeps failing, and probe it back after a cool-down."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """closed → (``failures`` consecutive failures) → open → (``cooldown`` seconds) → half-open: one probe request
    is let through; its success closes the circuit, its failure opens it again for another cool-down."""

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = failures
        self.cooldown = cooldown
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self._held_until: float | None = None

    def hold_open(self, seconds: float) -> None:
        """Send nothing to this upstream for ``seconds`` (an operator or a runbook failing it over), then probe."""
        self._held_until = self._clock() + seconds
        self._opened_at = self._held_until - self.cooldown
        self._probing = False

    def release(self) -> None:
        """End a hold: close the circuit now."""
        self._held_until = None
        self.record_success()

    @property
    def state(self) -> str:
        if self._held_until is not None and self._clock() < self._held_until:
            return "open"
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        """Whether a request may go to this upstream now (claims the single probe when half-open)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self.failures_to_open:
            self._opened_at = self._clock()
        self._probing = False
