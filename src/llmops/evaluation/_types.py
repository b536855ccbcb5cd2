"""What evaluation works on: examples (dataset items), samples (an example and what the system produced for it),
scores, and the `Metric` protocol every metric implements.

Metrics score a batch of samples at once: the costly parts (embeddings, judge calls) are shared across a batch
(`ScoringContext.embed` memoises and batches), which is what lets 1,000 items score in seconds.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

import numpy as np
import numpy.typing as npt
import orjson

from llmops.evaluation._retrieval import RelevantPassage

if TYPE_CHECKING:
    from llmops.gateway import Gateway
    from llmops.guardrails import GroundingChecker
    from llmops.knowledge import Embedder
    from llmops.prompts import PromptRegistry

__all__ = [
    "AsyncMetric",
    "Example",
    "Metric",
    "MetricDeps",
    "RetrievedContext",
    "Sample",
    "Score",
    "ScoringContext",
    "is_async_metric",
]


@dataclass(frozen=True)
class Example:
    """One dataset item. Only ``input`` is required; each metric uses the fields it needs and errors without them.

    Attributes:
        id: Stable within a dataset (given in the file, else a hash of the content).
        input: The question or request.
        expected: The reference answer, when there is one.
        facts: Key facts a correct answer states (each a short sentence or phrase).
        sources: Passages a good retrieval returns (document name and, optionally, a snippet the chunk contains).
        answerable: False when the corpus does not hold the answer: the right output is a refusal ("I don't know").
        assertions: Item-level task checks, e.g. ``{"type": "contains", "value": "15 days"}``.
        tags: Free labels for slicing results ("pto", "adversarial").
        metadata: Anything else (the trace it came from, who reviewed it, a human label for judge agreement).
    """

    id: str
    input: str
    expected: str | None = None
    facts: tuple[str, ...] = ()
    sources: tuple[RelevantPassage, ...] = ()
    answerable: bool = True
    assertions: tuple[dict[str, Any], ...] = ()
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "input": self.input,
            "expected": self.expected,
            "facts": list(self.facts),
            "sources": [{"source": s.source, **({"contains": s.contains} if s.contains else {})} for s in self.sources],
            "answerable": self.answerable,
            "assertions": [dict(a) for a in self.assertions],
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
        }

    def content_hash(self) -> str:
        """Hash of everything but the id: what decides whether a cached result still applies."""
        data = self.to_dict()
        del data["id"]
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Example:
        """Build from the `to_dict` shape (validated by `llmops.evaluation` dataset loaders before this)."""
        return cls(
            id=str(data["id"]),
            input=str(data["input"]),
            expected=data.get("expected"),
            facts=tuple(data.get("facts") or ()),
            sources=tuple(RelevantPassage(s["source"], s.get("contains")) for s in data.get("sources") or ()),
            answerable=bool(data.get("answerable", True)),
            assertions=tuple(data.get("assertions") or ()),
            tags=tuple(data.get("tags") or ()),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True)
class RetrievedContext:
    """A chunk the system retrieved for the example, in rank order."""

    source: str
    text: str
    score: float = 0.0
    chunk_id: str = ""


@dataclass(frozen=True)
class Sample:
    """An example and what the system under test produced for it.

    Attributes:
        output: The answer text ("" when the run errored).
        contexts: Retrieved chunks, best first (empty for a system without retrieval).
        abstained: The system said it does not know (the RAG pipeline's abstention, or a refusal in the text).
        error: Why producing the output failed; a sample with an error scores as errored on every metric.
    """

    example: Example
    output: str
    contexts: tuple[RetrievedContext, ...] = ()
    latency_ms: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    abstained: bool = False
    error: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class Score:
    """One metric's result on one sample: a value in the metric's range, or an error (never NaN, never dropped).

    A value of None means the metric did not score the sample and ``error`` says why: either it could not (the
    judge's output could not be parsed after retries, the system errored), which counts against a gate's error
    budget, or it does not apply (``skipped``: the example lacks what the metric needs, such as facts on a question
    the corpus cannot answer), which does not.
    """

    metric: str
    value: float | None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def __post_init__(self) -> None:
        if self.value is None and not self.error:
            raise ValueError(f"{self.metric}: a score without a value must say why (error)")
        if self.value is not None and self.value != self.value:  # NaN
            raise ValueError(f"{self.metric}: NaN is not a score; report an error instead")

    @classmethod
    def failed(cls, metric: str, error: str, **details: Any) -> Score:
        return cls(metric, None, error, details)

    @classmethod
    def not_applicable(cls, metric: str, reason: str) -> Score:
        return cls(metric, None, reason, skipped=True)

    @property
    def errored(self) -> bool:
        """Could not score (as opposed to a metric that does not apply to this example)."""
        return self.value is None and not self.skipped


@dataclass
class MetricDeps:
    """What metrics may need, built once per run by the caller (the platform, a test, the benchmark)."""

    embedder: Embedder | None = None
    grounding: GroundingChecker | None = None
    gateway: Gateway | None = None
    prompts: PromptRegistry | None = None
    judge_model: str | None = None


class ScoringContext:
    """Shared by the metrics of one batch: memoised embeddings, so a text used by three metrics is embedded once."""

    def __init__(self, deps: MetricDeps, *, batch_size: int = 32, max_texts: int | None = None) -> None:
        """``max_texts`` bounds the memo (a long-lived context, as online evaluation keeps, forgets when full)."""
        self.deps = deps
        self._batch_size = batch_size
        self._max_texts = max_texts
        self._vectors: dict[str, npt.NDArray[np.float32]] = {}
        self._lock = threading.Lock()
        #: Results metrics share within this context (grounding reports, say), by the name of what is kept.
        self.shared: dict[str, dict[Any, Any]] = {}
        #: Guards ``shared``: sync metrics run on worker threads.
        self.shared_lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit vectors, one row per text. Texts are embedded once per context, in batches of similar length
        (padding a short text to a long one's length is most of a mixed batch's cost)."""
        embedder = self.deps.embedder
        if embedder is None:
            raise RuntimeError("this metric needs an embedder (MetricDeps.embedder)")
        with self._lock:
            if self._max_texts is not None and len(self._vectors) + len(texts) > self._max_texts:
                self._vectors.clear()
            todo = sorted({t for t in texts if t not in self._vectors}, key=len)
            for start in range(0, len(todo), self._batch_size):
                batch = todo[start : start + self._batch_size]
                for text, vector in zip(batch, embedder.embed(batch), strict=True):
                    self._vectors[text] = np.asarray(vector, dtype=np.float32)
            if not texts:
                return np.zeros((0, embedder.dimensions), dtype=np.float32)
            return np.stack([self._vectors[t] for t in texts])


@runtime_checkable
class Metric(Protocol):
    """Scores samples. ``name`` is how configs and reports refer to it; ``higher_is_better`` orients comparisons.

    Register more through the ``llmops.metrics`` entry point: a factory ``(params: dict, deps: MetricDeps) -> Metric``.
    """

    name: str
    higher_is_better: bool

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        """One score per sample, in order."""
        ...


class AsyncMetric(Protocol):
    """A metric that calls a model (an LLM judge): the same contract, awaited."""

    name: str
    higher_is_better: bool

    async def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        """One score per sample, in order."""
        ...


def is_async_metric(metric: Metric | AsyncMetric) -> TypeGuard[AsyncMetric]:
    return inspect.iscoroutinefunction(metric.score)
