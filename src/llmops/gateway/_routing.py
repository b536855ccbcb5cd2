"""Routers: model names that pick, per request, one of several aliases by a policy.

- ``cost``: the cheapest candidate (by the price book) that has every capability the request needs.
- ``complexity``: a small request classifier; short factual questions go to ``simple``, the rest to ``complex``.
- ``weighted``: a split by weight, sticky per user so one user keeps one model.
- ``latency``: the candidate with the lowest recent time to first token (an exponentially weighted average), with a
  little exploration so a recovered upstream gets measured again.

The decision (policy, choice, reason) is recorded on the call's span.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from llmops._settings import ModelConfig, RouterConfig
from llmops.gateway._types import ChatRequest

__all__ = ["Route", "Router", "needed_capabilities", "request_complexity"]

_REASONING = re.compile(
    r"\b(why|explain|compare|analy[sz]e|derive|prove|design|plan|step[- ]by[- ]step|trade-?offs?|evaluate|refactor|"
    r"implement|debug|write (a|an|the) (function|program|essay|story|report))\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```|def |class |function\s*\(|SELECT |#include|=>|\{\s*\n")


@dataclass(frozen=True)
class Route:
    alias: str
    policy: str
    reason: str


def needed_capabilities(request: ChatRequest) -> set[str]:
    needs = set()
    if request.tools:
        needs.add("tools")
    if request.response_format and request.response_format.get("type") in ("json_object", "json_schema"):
        needs.add("json")
    return needs


def request_complexity(request: ChatRequest) -> tuple[str, str]:
    """("simple" | "complex", why). Simple: one short question, no code, no tools, no multi-step reasoning words."""
    text = "\n".join(str(m.get("content") or "") for m in request.messages if m.get("role") == "user")
    words = len(text.split())
    if request.tools:
        return "complex", "uses tools"
    if _CODE.search(text):
        return "complex", "contains code"
    if words > 60:
        return "complex", f"{words} words"
    if _REASONING.search(text):
        return "complex", f"asks for reasoning ({_REASONING.search(text).group(0)!r})"  # type: ignore[union-attr]
    if text.count("?") > 2:
        return "complex", "several questions"
    return "simple", f"short question ({words} words)"


class Router:
    def __init__(
        self,
        config: RouterConfig,
        models: dict[str, ModelConfig],
        price_of: Callable[[str], float],
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._models = models
        self._price_of = price_of  # alias -> dollars per million tokens, input + output
        self._latency: dict[str, float] = {}
        self._rng = rng or random.Random()
        unknown = [c for c in self.candidates if c not in models]
        if unknown:
            raise ValueError(f"router {config.name!r} names unknown models {unknown}")

    @property
    def candidates(self) -> list[str]:
        c = self.config
        names = list(c.candidates) or [*c.weights]
        for extra in (c.simple, c.complex):
            if extra and extra not in names:
                names.append(extra)
        return names

    def set_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """Shift a weighted router's split (e.g. away from a degraded model); returns the previous weights."""
        unknown = [a for a in weights if a not in self._models]
        if unknown:
            raise ValueError(f"router {self.config.name!r}: unknown models {unknown}")
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError("weights must be non-negative and at least one positive")
        previous = dict(self.config.weights)
        self.config = self.config.model_copy(update={"weights": dict(weights)})
        return previous

    def choose(self, request: ChatRequest) -> Route:
        policy = self.config.policy
        needs = needed_capabilities(request) | set(self.config.require)
        able = [a for a in self.candidates if needs <= set(self._models[a].capabilities)]
        if not able:
            raise ValueError(f"router {self.config.name!r}: no candidate has the capabilities {sorted(needs)}")
        if policy == "cost":
            alias = min(able, key=self._price_of)
            return Route(alias, policy, f"cheapest of {len(able)} with {sorted(needs) or 'no special needs'}")
        if policy == "complexity":
            level, why = request_complexity(request)
            alias = (self.config.simple if level == "simple" else self.config.complex) or able[0]
            return Route(alias, policy, f"{level}: {why}")
        if policy == "weighted":
            return self._weighted(request, able)
        return self._fastest(able)

    def _weighted(self, request: ChatRequest, able: list[str]) -> Route:
        weights = {a: self.config.weights.get(a, 0.0) for a in able}
        total = sum(weights.values()) or 1.0
        if request.user:
            digest = hashlib.sha256(f"{self.config.name}:{request.user}".encode()).digest()
            point = int.from_bytes(digest[:8], "big") / 2**64
        else:
            point = self._rng.random()
        cumulative = 0.0
        for alias, weight in weights.items():
            cumulative += weight / total
            if point < cumulative:
                return Route(alias, "weighted", f"weight {weight / total:.2f}")
        return Route(able[-1], "weighted", "rounding")

    def _fastest(self, able: list[str]) -> Route:
        unmeasured = [a for a in able if a not in self._latency]
        if unmeasured:
            return Route(unmeasured[0], "latency", "not measured yet")
        if self._rng.random() < 0.05:
            alias = self._rng.choice(able)
            return Route(alias, "latency", "exploring")
        alias = min(able, key=lambda a: self._latency[a])
        return Route(alias, "latency", f"lowest recent TTFT {self._latency[alias]:.0f} ms")

    def observe(self, alias: str, ttft_ms: float) -> None:
        """Feed back a call's time to first token (an exponentially weighted moving average, alpha 0.2)."""
        previous = self._latency.get(alias)
        self._latency[alias] = ttft_ms if previous is None else 0.8 * previous + 0.2 * ttft_ms
