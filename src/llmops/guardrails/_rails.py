"""The rails a policy can name: each wraps detectors, applies the policy's threshold, and says whether it triggered.

A rail never acts: it returns an `Outcome` (triggered or not, a score, the findings it points at) and the engine
applies the action the policy gave it. Rails are built once per policy version by `compile_rail`, from the shared
`RailModels`, so a model is loaded once per platform however many policies use it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from llmops._plugins import load_plugin
from llmops.guardrails._findings import Detector, Finding
from llmops.guardrails._grounding import GroundingChecker, GroundingReport
from llmops.guardrails._injection import IndirectInjectionDetector, InjectionDetector, InjectionModel
from llmops.guardrails._leakage import PiiLeakageDetector
from llmops.guardrails._pii import PiiDetector
from llmops.guardrails._policy import PolicyError, RailSpec
from llmops.guardrails._text import split_sentences
from llmops.guardrails._toxicity import InsultDetector
from llmops.knowledge import Embedder

__all__ = ["Outcome", "RailCheck", "RailModels", "RequestTexts", "compile_rail"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rail found. ``score`` is the rail's risk in [0, 1] (for grounding: the support, 1 = grounded)."""

    triggered: bool
    score: float
    findings: tuple[Finding, ...] = ()
    reason: str = ""
    reask: str | None = None
    grounding: GroundingReport | None = None


PASS = Outcome(False, 0.0)


@dataclass(frozen=True, slots=True)
class RequestTexts:
    """What a rail may compare the checked text with. None of it is ever recorded."""

    user: str | None = None
    supplied: tuple[str, ...] = ()  # texts the user wrote (the question, earlier turns): not a leak when repeated
    context: tuple[str, ...] = ()  # retrieved chunks, source [1] first
    system_prompt: str = ""


class RailCheck(Protocol):
    spec: RailSpec
    tier: int  # 0: patterns, validators, lists; 1: a local model
    streamable: bool  # can judge an answer sentence by sentence while it streams
    # Spends its time in native code that releases the GIL (ONNX embeddings): worth a thread of its own. spaCy's NER
    # is not: on a thread beside the Python-bound rails it was slower (69 ms p50) than inline (56 ms).
    heavy: bool

    def run(self, text: str, request: RequestTexts) -> Outcome:
        """Judge ``text``."""
        ...


class RailModels:
    """The detectors and models rails share, loaded on first use (thread-safe) and kept for the platform's life."""

    def __init__(self, embedder: Embedder | None = None, detectors: Mapping[str, Detector] | None = None) -> None:
        self.embedder = embedder
        self.detectors: dict[str, Detector] = dict(detectors or {})
        self._lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _get(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def pii(self, entities: Sequence[str] | None, ner: bool, min_score: float) -> PiiDetector:
        ner_detector = self.ner() if ner else None
        key = ("pii", tuple(sorted(entities)) if entities else None, ner, min_score)
        built: PiiDetector = self._get(
            key, lambda: PiiDetector(entity_types=entities, ner=ner_detector, min_score=min_score)
        )
        return built

    def ner(self) -> Detector:
        from llmops.guardrails._ner import SpacyNerDetector

        if not SpacyNerDetector.is_available():
            raise PolicyError("a rail asks for ner: true, but spaCy's model is missing (pip install 'llmops[ner]')")
        detector: Detector = self._get(("ner",), SpacyNerDetector)
        return detector

    def injection_model(self) -> InjectionModel:
        model: InjectionModel = self._get(("injection-model",), InjectionModel.bundled)
        return model

    def injection(self, threshold: float | None) -> InjectionDetector:
        model = self.injection_model()
        detector: InjectionDetector = self._get(
            ("injection", threshold), lambda: InjectionDetector(threshold=threshold, model=model)
        )
        return detector

    def indirect_injection(self, threshold: float | None) -> IndirectInjectionDetector:
        model = self.injection_model()
        value = 0.95 if threshold is None else threshold
        detector: IndirectInjectionDetector = self._get(
            ("indirect", value), lambda: IndirectInjectionDetector(threshold=value, model=model)
        )
        return detector

    def insults(self, threshold: float | None) -> InsultDetector:
        value = 0.8 if threshold is None else threshold
        detector: InsultDetector = self._get(("insults", value), lambda: InsultDetector(threshold=value))
        return detector

    def grounding(self) -> GroundingChecker:
        checker: GroundingChecker = self._get(("grounding",), lambda: GroundingChecker(self.embedder))
        return checker

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise PolicyError("rail 'topics' needs an embedding model and none is configured")
        return np.asarray(self.embedder.embed(texts), dtype=np.float32)

    def custom(self, name: str) -> Detector:
        """A detector registered in code, else one installed under the ``llmops.detectors`` entry point."""
        if name in self.detectors:
            return self.detectors[name]
        try:
            factory = load_plugin("llmops.detectors", name)
        except LookupError as exc:
            registered = ", ".join(sorted(self.detectors)) or "none"
            raise PolicyError(f"rail 'custom': {exc}; registered in code: {registered}") from None
        detector: Detector = self._get(("custom", name), factory)
        return detector


def compile_rail(spec: RailSpec, models: RailModels) -> RailCheck:
    """The rail ``spec`` describes, with its models loaded (a missing model is a `PolicyError`)."""
    builders: dict[str, Callable[[RailSpec, RailModels], RailCheck]] = {
        "size": _Size,
        "rate": _Rate,
        "pii": _Pii,
        "injection": _Injection,
        "topics": _Topics,
        "indirect_injection": _IndirectInjection,
        "pii_leakage": _PiiLeakage,
        "toxicity": _Toxicity,
        "system_prompt_leakage": _SystemPromptLeakage,
        "grounding": _Grounding,
        "citations": _Citations,
        "json_schema": _JsonSchema,
        "custom": _Custom,
    }
    return builders[spec.rail](spec, models)


class _Rail:
    tier = 0
    streamable = False
    heavy = False

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        self.spec = spec


class _Size(_Rail):
    def run(self, text: str, request: RequestTexts) -> Outcome:
        limit = self.spec.max_chars or 0
        if len(text) <= limit:
            return PASS
        return Outcome(True, 1.0, reason=f"{len(text)} characters; the limit is {limit}")


class _Rate(_Rail):
    """Requests per user in a sliding window, counted in this process (the gateway's limits are the shared ones)."""

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def run(self, text: str, request: RequestTexts) -> Outcome:
        limit, window = self.spec.max_requests or 0, self.spec.per_seconds
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(request.user or "anonymous", deque())
            while seen and now - seen[0] >= window:
                seen.popleft()
            if len(seen) >= limit:
                return Outcome(True, 1.0, reason=f"more than {limit} requests in {window:g} s")
            seen.append(now)
            if len(self._seen) > 100_000:  # forget idle users so the table cannot grow without bound
                self._seen = {user: times for user, times in self._seen.items() if times and now - times[-1] < window}
        return PASS


class _Pii(_Rail):
    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self.tier = 1 if spec.ner else 0
        self._detector = models.pii(spec.entities, spec.ner, spec.threshold if spec.threshold is not None else 0.5)

    def run(self, text: str, request: RequestTexts) -> Outcome:
        findings = self._detector.detect(text)
        return _from_findings(findings)


class _Injection(_Rail):
    tier = 1

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self._detector = models.injection(spec.threshold)

    def run(self, text: str, request: RequestTexts) -> Outcome:
        return _from_findings(self._detector.detect(text))


class _IndirectInjection(_Rail):
    """Runs on one retrieved chunk at a time; the engine drops (or blocks on) the chunks it flags."""

    tier = 1

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self._detector = models.indirect_injection(spec.threshold)

    def run(self, text: str, request: RequestTexts) -> Outcome:
        return _from_findings(self._detector.detect(text))


class _Topics(_Rail):
    """Denied topics by similarity to declared example questions; with allowed ones, anything far from all is off."""

    tier = 1
    heavy = True

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self._models = models
        # MiniLM, five denied examples (medical, legal advice): ten such questions scored 0.34-0.63 against them,
        # twelve HR-handbook questions 0.04-0.37 ("book a doctor's appointment through the benefits portal").
        self._threshold = 0.4 if spec.threshold is None else spec.threshold
        examples = [*spec.denied, *spec.allowed]
        vectors = models.embed(examples)
        self._denied, self._allowed = vectors[: len(spec.denied)], vectors[len(spec.denied) :]

    def run(self, text: str, request: RequestTexts) -> Outcome:
        vector = self._models.embed([text])[0]
        denied = float(np.max(self._denied @ vector)) if len(self._denied) else -1.0
        allowed = float(np.max(self._allowed @ vector)) if len(self._allowed) else None
        if denied >= self._threshold and (allowed is None or denied >= allowed):
            example = int(np.argmax(self._denied @ vector)) + 1
            return Outcome(True, round(denied, 4), reason=f"close to denied example {example}")
        if allowed is not None and allowed < self.spec.allowed_threshold:
            return Outcome(True, round(1.0 - max(allowed, 0.0), 4), reason="far from every allowed example")
        return Outcome(False, round(max(denied, 0.0), 4))


class _PiiLeakage(_Rail):
    streamable = True

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self.tier = 1 if spec.ner else 0
        pii = models.pii(spec.entities, spec.ner, spec.threshold if spec.threshold is not None else 0.5)
        self._detector = PiiLeakageDetector(pii)

    def run(self, text: str, request: RequestTexts) -> Outcome:
        return _from_findings(self._detector.detect(text, request.supplied))


class _Toxicity(_Rail):
    tier = 1
    streamable = True

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self._detector = models.insults(spec.threshold)

    def run(self, text: str, request: RequestTexts) -> Outcome:
        return _from_findings(self._detector.detect(text))


_WORDS = re.compile(r"\w+")
_SHINGLE = 6


class _SystemPromptLeakage(_Rail):
    """Word 6-grams of the system prompt found in the answer: the share of the prompt's n-grams, or 25 of them."""

    streamable = True

    def run(self, text: str, request: RequestTexts) -> Outcome:
        prompt = _shingles(request.system_prompt)
        if not prompt:
            return PASS
        shared = len(prompt & _shingles(text))
        score = round(min(1.0, max(shared / len(prompt), shared / 25)), 4)
        threshold = 0.3 if self.spec.threshold is None else self.spec.threshold
        if shared and score >= threshold:
            return Outcome(True, score, reason=f"{shared} of the system prompt's {len(prompt)} word 6-grams")
        return Outcome(False, score)


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i : i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)}


class _Grounding(_Rail):
    """Triggered when the share of supported claims is under the threshold; the report is kept for the trace."""

    tier = 1

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self._checker = models.grounding()
        self._threshold = 0.5 if spec.threshold is None else spec.threshold

    def run(self, text: str, request: RequestTexts) -> Outcome:
        if not request.context:
            return Outcome(False, 1.0, reason="no context to check against")
        report = self._checker.check(text, request.context)
        unsupported = report.unsupported
        findings = tuple(
            Finding("UNSUPPORTED_CLAIM", v.start, v.end, round(1 - v.score, 4), "grounding", v.reason)
            for v in unsupported
        )
        reason = f"{len(unsupported)} of {len(report.claims)} claims unsupported"
        return Outcome(report.score < self._threshold, report.score, findings, reason, grounding=report)


_CITED = re.compile(r"\[(\d{1,3})\]")


class _Citations(_Rail):
    """Each sentence that cites ``[n]`` must be supported by source n (and n must exist)."""

    tier = 1

    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self._checker = models.grounding()
        self._threshold = 0.5 if spec.threshold is None else spec.threshold

    def run(self, text: str, request: RequestTexts) -> Outcome:
        checked, bad = 0, []
        for start, end in split_sentences(text):
            sentence = text[start:end]
            for number in {int(n) for n in _CITED.findall(sentence)}:
                checked += 1
                if not 1 <= number <= len(request.context):
                    bad.append(Finding("BAD_CITATION", start, end, 1.0, "citations", f"no source [{number}]"))
                    continue
                support = self._checker.check(sentence, [request.context[number - 1]]).score
                if support < self._threshold:
                    reason = f"source [{number}] does not support it"
                    bad.append(Finding("BAD_CITATION", start, end, round(1 - support, 4), "citations", reason))
        if not bad:
            return Outcome(False, 0.0, reason=f"{checked} citations checked")
        return Outcome(True, round(len(bad) / checked, 4), tuple(bad), f"{len(bad)} of {checked} citations unsupported")


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)


class _JsonSchema(_Rail):
    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        from jsonschema import Draft202012Validator

        self._validator = Draft202012Validator(spec.json_schema or {})

    def run(self, text: str, request: RequestTexts) -> Outcome:
        fenced = _FENCE.match(text)
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except json.JSONDecodeError as exc:
            problem = f"the answer is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            return Outcome(True, 1.0, reason="not JSON", reask=problem)
        error = next(iter(sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))), None)
        if error is None:
            return PASS
        where = error.json_path
        problem = f"the answer does not match the JSON schema at {where}: {error.message}"
        # The reason is recorded; the validator's message can quote the answer's values, so it stays out of it.
        return Outcome(True, 1.0, reason=f"schema mismatch at {where} ({error.validator})", reask=problem)


class _Custom(_Rail):
    def __init__(self, spec: RailSpec, models: RailModels) -> None:
        super().__init__(spec, models)
        self._detector = models.custom(spec.detector or "")

    def run(self, text: str, request: RequestTexts) -> Outcome:
        threshold = 0.0 if self.spec.threshold is None else self.spec.threshold
        return _from_findings([f for f in self._detector.detect(text) if f.score >= threshold])


def _from_findings(findings: Sequence[Finding]) -> Outcome:
    if not findings:
        return PASS
    reasons = sorted({f.reason for f in findings if f.reason})
    return Outcome(True, max(f.score for f in findings), tuple(findings), "; ".join(reasons[:3]))
