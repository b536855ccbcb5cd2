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
from llmops.guardrails._redaction import redact
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

    def get_version(self, name: str, version: int) -> _Versioned:
        """One exact version."""
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

    def scrub(self, text: str) -> str:
        """``text`` with personal data replaced by typed placeholders (``<EMAIL_ADDRESS>``), whatever the route's
        policy: what the platform stores (questions and answers on traces) is scrubbed, what it answers is not."""
        detector = self.models.pii(None, False, 0.5)
        findings = detector.detect(text)
        return redact(text, findings) if findings else text

    def register_detector(self, detector: Detector) -> None:
        """Make ``detector`` available to policies as ``{rail: custom, detector: <its name>}``."""
        with self._lock:
            self.models.detectors[detector.name] = detector
            self._engines = {key: e for key, e in self._engines.items() if not _uses_custom(e.policy)}

    def engine(self, route: str, *, policy: str | None = None) -> GuardrailEngine | None:
        """The engine for ``route``'s policy (see `policy_version`), or None when the route runs unguarded."""
        resolved = self.policy_version(route, policy=policy)
        if resolved is None:
            return None
        name, found = resolved
        key = (name, found.version)
        engine = self._engines.get(key)
        if engine is None:
            engine = self.compile(found.policy, version=found.version)
            with self._lock:
                self._engines[key] = engine
        return engine

    def policy_version(self, route: str, *, policy: str | None = None) -> tuple[str, _Versioned] | None:
        """The policy name and version guarding ``route``: its binding at the label, or None when it is ``none``.

        ``policy`` overrides the route's binding: a policy name (at the label), ``name@version`` (that exact
        version, as an evaluation pins it), or ``none``.
        """
        name = policy if policy is not None else self.settings.policy_for(route)
        if name is None or name == "none":
            return None
        if "@" in name:
            name, _, number = name.partition("@")
            if not number.isdigit():
                raise ValueError(f"guardrail policy {policy!r}: the version after '@' must be a number")
            return name, self._policies.get_version(name, int(number))
        return name, self._policies.get(name, label=self.settings.label, environment=self._environment)

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
