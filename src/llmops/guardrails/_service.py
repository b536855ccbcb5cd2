"""The platform's guardrails: policies from the registry, bound to routes by settings, compiled once per version.

A route is a RAG app or a gateway model name. Its policy follows a label (``production`` by default) through the
registry's cache, so moving or rolling back a policy's label takes effect within the cache's TTL without a restart;
each policy version is compiled into a `GuardrailEngine` once and kept.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Protocol

from llmops._settings import GuardrailSettings
from llmops.guardrails._engine import GuardrailEngine
from llmops.guardrails._findings import Detector
from llmops.guardrails._policy import GuardrailPolicy
from llmops.guardrails._rails import RailModels
from llmops.knowledge import Embedder

__all__ = ["Guardrails", "PolicySource"]


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...

    @property
    def policy(self) -> GuardrailPolicy: ...


class PolicySource(Protocol):
    """Where labelled policies come from (the `PolicyRegistry`)."""

    def get(self, name: str, *, label: str = "production", environment: str | None = None) -> _Versioned:
        """The version ``label`` points at, cached."""
        ...


class Guardrails:
    """Finds the engine that guards a route, and owns what engines share (models, the rail thread pool)."""

    def __init__(
        self,
        policies: PolicySource,
        settings: GuardrailSettings,
        *,
        environment: str | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self.models = RailModels(embedder)
        self._policies = policies
        self._environment = environment
        self._executor = concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="llmops-rails")
        self._engines: dict[tuple[str, int], GuardrailEngine] = {}
        self._lock = threading.Lock()

    def register_detector(self, detector: Detector) -> None:
        """Make ``detector`` available to policies as ``{rail: custom, detector: <its name>}``."""
        with self._lock:
            self.models.detectors[detector.name] = detector
            self._engines = {key: e for key, e in self._engines.items() if not _uses_custom(e.policy)}

    def engine(self, route: str) -> GuardrailEngine | None:
        """The engine for ``route``'s policy at its label, or None when the route is bound to ``none``."""
        name = self.settings.policy_for(route)
        if name is None:
            return None
        found = self._policies.get(name, label=self.settings.label, environment=self._environment)
        key = (name, found.version)
        engine = self._engines.get(key)
        if engine is None:
            engine = self.compile(found.policy, version=found.version)
            with self._lock:
                self._engines[key] = engine
        return engine

    def compile(self, policy: GuardrailPolicy, *, version: int | None = None) -> GuardrailEngine:
        """An engine for ``policy`` (loads the models it needs; raises `PolicyError` when one is missing)."""
        return GuardrailEngine(policy, models=self.models, version=version, executor=self._executor)

    def warm(self, routes: list[str]) -> None:
        """Compile the routes' policies now, so the first request does not pay for loading models."""
        for route in routes:
            self.engine(route)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _uses_custom(policy: GuardrailPolicy) -> bool:
    return any(spec.rail == "custom" for spec in (*policy.input, *policy.output))
