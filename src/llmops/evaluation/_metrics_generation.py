"""Answer metrics without a judge model: grounding, embedding similarity, fact coverage and refusals.

Grounding is the guardrails' `GroundingChecker` (the output rail and offline evaluation must agree on what
"supported" means), run over a whole batch at once: a first pass records which texts the checker's semantic tier asks
to embed, `ScoringContext.embed` embeds them all in length-sorted batches (and shares them with every other metric of
the batch), and only the checks that asked for embeddings run again, now reading the memo. The verdicts are the
checker's own; only the embedding calls are batched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from llmops.evaluation._types import Sample, Score, ScoringContext
from llmops.guardrails._grounding import GroundingChecker, GroundingReport
from llmops.guardrails._text import split_sentences
from llmops.knowledge import Embedder

__all__ = [
    "REFUSAL_PATTERNS",
    "AnswerRelevance",
    "AnswerSimilarity",
    "Correctness",
    "FactCoverage",
    "Faithfulness",
    "GroundingMetric",
    "RefusalCorrectness",
    "context_statements",
    "fact_supported",
    "is_refusal",
    "recall_statements",
]

# What a refusal says, in its opening sentence (lower case, straight apostrophes). One list for every metric that asks
# "did the system decline to answer?".
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bi (?:do not|don't|dont) (?:know|have (?:that|this|enough|any|the) (?:information|answer))",
    r"\bi(?: am|'m) not (?:sure|certain)\b",
    r"(?:^|\bi (?:was |am )?|\bi'm )(?:cannot|can't|can not|could not|couldn't|unable to|not able to) "
    r"(?:find|locate|answer|determine|tell|help|assist|provide)",
    r"\bnot (?:in|found in|mentioned in|covered (?:by|in)|provided in|stated in|available in|included in|given in) "
    r"(?:the |any of the |any |my |these )?(?:provided |given |available |retrieved )?"
    r"(?:documents?|sources?|context|handbook|texts?|passages?|information)\b",
    r"\b(?:documents?|sources?|context|passages?|handbook) (?:do not|does not|don't|doesn't|did not) "
    r"(?:contain|mention|say|include|provide|specify|cover|state|address)\b",
    r"\bno (?:relevant |specific |such )?information\b",
    r"\b(?:not enough|insufficient) (?:information|context)\b",
    r"\bnone of the (?:documents|sources|passages)\b",
    r"\bthere is nothing (?:in|about)\b",
)
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS))
_SPACES = re.compile(r"\s+")


def is_refusal(text: str) -> bool:
    """Whether ``text`` declines to answer: its first sentence of three or more words says so (`REFUSAL_PATTERNS`).

    Only the opening counts, so an answer that adds "I don't know about contractors" after answering is not a
    refusal; a short lead-in ("Sorry.") is skipped.

    Example:
        >>> is_refusal("I don't know. None of the documents covers this."), is_refusal("You get 15 days.")
        (True, False)
    """
    spans = split_sentences(text)
    for number, (start, end) in enumerate(spans, 1):
        sentence = text[start:end].replace("’", "'").lower()
        if len(sentence.split()) >= 3 or number == len(spans):
            return _REFUSAL.search(sentence) is not None
    return False


def refused(sample: Sample) -> bool:
    """The system's own abstention flag, or a refusal in its text."""
    return sample.abstained or is_refusal(sample.output)


def fact_supported(report: GroundingReport, fact: str, texts: Sequence[str]) -> bool:
    """Whether a checked statement is supported: all its claims are, or, when it is too short to hold a claim
    (a bare name or phrase: "Paris"), it occurs in the texts (case and spacing ignored)."""
    if report.claims:
        return report.supported
    return _flat(fact) in _flat(" ".join(texts))


def _flat(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def _errored(name: str, sample: Sample) -> Score | None:
    return Score.failed(name, f"the system errored: {sample.error}") if sample.error else None


def _cosines(ctx: ScoringContext, pairs: Sequence[tuple[str, str]]) -> list[float]:
    """Cosine similarity of each pair, clipped to [0, 1], from one memoised embedding call."""
    if not pairs:
        return []
    vectors = ctx.embed([text for pair in pairs for text in pair])
    products = np.einsum("ij,ij->i", vectors[0::2], vectors[1::2])
    return [round(min(1.0, max(0.0, float(p))), 6) for p in products]


class _RecordingEmbedder:
    """Stands in for the embedder during the first pass: notes what the checker wants embedded, returns zeros."""

    def __init__(self, embedder: Embedder) -> None:
        self.name = embedder.name
        self.dimensions = embedder.dimensions
        self.max_tokens = embedder.max_tokens
        self._embedder = embedder
        self.requested: list[str] = []

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._embedder.token_offsets(text)

    def embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        self.requested.extend(texts)
        return np.zeros((len(texts), self.dimensions), dtype=np.float32)


class _ContextEmbedder(_RecordingEmbedder):
    """The embedder as the checker sees it in the second pass: the scoring context's memo."""

    def __init__(self, ctx: ScoringContext, embedder: Embedder) -> None:
        super().__init__(embedder)
        self._ctx = ctx

    def embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self._ctx.embed(texts)


# Statements checked against one set of texts, and the texts: the unit of grounding work.
_Job = tuple[tuple[str, ...], tuple[str, ...]]
# Reports per scoring context (one batch), shared by the grounding metrics: faithfulness and context recall check
# against the same contexts, fact coverage and correctness check the same facts.
_MAX_REPORTS = 4096
_JOINER = "\n\n"  # always a sentence boundary, so no claim spans two statements


def context_statements(sample: Sample) -> tuple[str, ...]:
    """What is checked against a sample's contexts: its answer, then what a correct answer states (the facts, else
    the reference's sentences). Faithfulness and context recall both ask for this bundle, so each sample's contexts
    are analysed once."""
    return (sample.output, *recall_statements(sample))


def recall_statements(sample: Sample) -> tuple[str, ...]:
    """``example.facts``, or, without facts, the sentences of ``example.expected`` (empty when it has neither)."""
    example = sample.example
    if example.facts:
        return example.facts
    expected = example.expected or ""
    return tuple(expected[s:e] for s, e in split_sentences(expected))


def _split(report: GroundingReport, statements: Sequence[str]) -> list[GroundingReport]:
    """The report of a check of the joined statements, cut into one report per statement (claim offsets relative to
    the statement, score computed as `GroundingChecker.check` computes it: supported claim characters / claim
    characters, 1.0 without claims)."""
    out: list[GroundingReport] = []
    offset = 0
    for statement in statements:
        end = offset + len(statement)
        claims = tuple(
            replace(c, start=c.start - offset, end=c.end - offset) for c in report.claims if offset <= c.start < end
        )
        total = sum(c.end - c.start for c in claims)
        score = sum(c.end - c.start for c in claims if c.supported) / total if total else 1.0
        out.append(GroundingReport(round(score, 4), claims))
        offset = end + len(_JOINER)
    return out


class GroundingMetric:
    """Base of the metrics that ask the `GroundingChecker` whether statements are supported by texts.

    With ``grounding`` given (``MetricDeps.grounding``), that checker is used as configured. Without it, a default
    `GroundingChecker` is used whose semantic tier reads the scoring context's embeddings (``MetricDeps.embedder``;
    without an embedder the checker judges by facts and words only), batched over the whole batch of samples.

    The statements checked against the same texts go through one check, joined (claims are judged one by one, so
    the verdicts are those of separate checks; analysing a 600-word context is most of a check's cost).
    """

    name = "grounding"
    higher_is_better = True

    def __init__(self, *, grounding: GroundingChecker | None = None) -> None:
        self._grounding = grounding

    def ground(
        self, ctx: ScoringContext, jobs: Sequence[tuple[Sequence[str], Sequence[str]]]
    ) -> list[list[GroundingReport]]:
        """For each (statements, texts): one `GroundingReport` per statement, as ``check(statement, texts)``."""
        owner = id(self._grounding)
        keys = [(owner, (tuple(statements), tuple(texts))) for statements, texts in jobs]
        with ctx.shared_lock:
            cache = ctx.shared.setdefault("grounding_reports", {})
            todo = list(dict.fromkeys(key for key in keys if key not in cache))
        reports = self._check([(_JOINER.join(statements), list(texts)) for _, (statements, texts) in todo], ctx)
        found = {key: _split(report, key[1][0]) for key, report in zip(todo, reports, strict=True)}
        with ctx.shared_lock:
            out = [found[key] if key in found else cache[key] for key in keys]
            # A long-lived context (online evaluation scores one sample at a time on one) must not grow forever.
            if len(cache) + len(found) > _MAX_REPORTS:
                cache.clear()
            cache.update(found)
        return out

    def _check(self, checks: Sequence[tuple[str, list[str]]], ctx: ScoringContext) -> list[GroundingReport]:
        if self._grounding is not None:
            return [self._grounding.check(text, texts) for text, texts in checks]
        embedder = ctx.deps.embedder
        if embedder is None:
            plain = GroundingChecker()
            return [plain.check(text, texts) for text, texts in checks]
        recorder = _RecordingEmbedder(embedder)
        first = GroundingChecker(recorder)
        reports: list[GroundingReport | None] = []
        for text, texts in checks:
            asked = len(recorder.requested)
            report = first.check(text, texts)
            # A check that embedded nothing did not depend on the embedder: its verdicts are final.
            reports.append(report if len(recorder.requested) == asked else None)
        if recorder.requested:
            ctx.embed(recorder.requested)
        second = GroundingChecker(_ContextEmbedder(ctx, embedder))
        return [
            report if report is not None else second.check(text, texts)
            for report, (text, texts) in zip(reports, checks, strict=True)
        ]

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        raise NotImplementedError


class Faithfulness(GroundingMetric):
    """Faithfulness: the share of the answer that its retrieved contexts support, in [0, 1].

    `GroundingChecker.check` (``sample.output``, the texts of ``sample.contexts``).score: the share of claim
    characters supported (1.0 for an answer with no checkable claims). A refusal (``sample.abstained`` or
    `is_refusal`) states nothing and scores 1.0. ``details["unsupported"]`` lists the unsupported claims. Skipped when
    the sample has no contexts.
    """

    name = "faithfulness"

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        scores: list[Score | None] = []
        jobs: list[tuple[tuple[str, ...], list[str]]] = []
        for sample in samples:
            failed = _errored(self.name, sample)
            if failed is None and not sample.contexts:
                failed = Score.not_applicable(self.name, "the sample has no retrieved contexts (sample.contexts)")
            if failed is None and refused(sample):
                failed = Score(self.name, 1.0, details={"refusal": True, "unsupported": []})
            scores.append(failed)
            if failed is None:
                jobs.append((context_statements(sample), [c.text for c in sample.contexts]))
        reports = iter(self.ground(ctx, jobs))
        out: list[Score] = []
        for sample, score in zip(samples, scores, strict=True):
            if score is None:
                report = next(reports)[0]
                unsupported = [sample.output[c.start : c.end] for c in report.unsupported]
                score = Score(self.name, report.score, details={"unsupported": unsupported})
            out.append(score)
        return out


class FactCoverage(GroundingMetric):
    """Fact coverage: the share of ``example.facts`` the answer states, in [0, 1].

    A fact counts when `GroundingChecker.check` (fact, [``sample.output``]) finds all its claims supported by the
    answer (a fact too short to hold a claim must occur in the answer). ``details["missing"]`` lists the facts not
    covered. Skipped when the example has no facts.
    """

    name = "fact_coverage"

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        scores: list[Score | None] = []
        jobs: list[tuple[tuple[str, ...], list[str]]] = []
        for sample in samples:
            failed = _errored(self.name, sample)
            if failed is None and not sample.example.facts:
                failed = Score.not_applicable(self.name, "the example has no facts (example.facts)")
            scores.append(failed)
            if failed is None:
                jobs.append((sample.example.facts, [sample.output]))
        reports = iter(self.ground(ctx, jobs))
        out: list[Score] = []
        for sample, score in zip(samples, scores, strict=True):
            if score is None:
                facts = sample.example.facts
                verdicts = next(reports)
                missing = [f for f, r in zip(facts, verdicts, strict=True) if not fact_supported(r, f, [sample.output])]
                score = Score(self.name, round(1.0 - len(missing) / len(facts), 6), details={"missing": missing})
            out.append(score)
        return out


class AnswerRelevance:
    """Answer relevance: cosine similarity of the embeddings of ``example.input`` and ``sample.output``, clipped to
    [0, 1].

    A refusal (``sample.abstained`` or `is_refusal`) scores 0.0 when the example is answerable and 1.0 when it is not
    (declining is then the relevant response); an empty output scores 0.0. Needs ``MetricDeps.embedder``.
    """

    name = "answer_relevance"
    higher_is_better = True

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        scores: list[Score | None] = []
        pairs: list[tuple[str, str]] = []
        for sample in samples:
            failed = _errored(self.name, sample)
            if failed is None and refused(sample):
                value = 0.0 if sample.example.answerable else 1.0
                failed = Score(self.name, value, details={"refusal": True})
            if failed is None and not sample.output.strip():
                failed = Score(self.name, 0.0, details={"empty": True})
            scores.append(failed)
            if failed is None:
                pairs.append((sample.example.input, sample.output))
        values = iter(_cosines(ctx, pairs))
        return [score if score is not None else Score(self.name, next(values)) for score in scores]


class AnswerSimilarity:
    """Answer similarity: cosine similarity of the embeddings of ``sample.output`` and ``example.expected``, clipped
    to [0, 1] (an empty output scores 0.0). Skipped when the example has no reference answer. Needs
    ``MetricDeps.embedder``."""

    name = "answer_similarity"
    higher_is_better = True

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        scores: list[Score | None] = []
        pairs: list[tuple[str, str]] = []
        for sample in samples:
            failed = _errored(self.name, sample)
            expected = sample.example.expected
            if failed is None and not expected:
                failed = Score.not_applicable(self.name, "the example has no reference answer (example.expected)")
            if failed is None and not sample.output.strip():
                failed = Score(self.name, 0.0, details={"empty": True})
            scores.append(failed)
            if failed is None and expected:
                pairs.append((sample.output, expected))
        values = iter(_cosines(ctx, pairs))
        return [score if score is not None else Score(self.name, next(values)) for score in scores]


class Correctness(GroundingMetric):
    """Correctness: the mean of ``answer_similarity`` and ``fact_coverage``, over those the example allows (a
    reference answer for the first, facts for the second), in [0, 1].

    ``details`` holds both parts. Skipped when the example has neither ``expected`` nor ``facts``. Needs
    ``MetricDeps.embedder``.
    """

    name = "correctness"

    def __init__(self, *, grounding: GroundingChecker | None = None) -> None:
        super().__init__(grounding=grounding)
        self._similarity = AnswerSimilarity()
        self._coverage = FactCoverage(grounding=grounding)

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        similarity = self._similarity.score(samples, ctx)
        coverage = self._coverage.score(samples, ctx)
        out: list[Score] = []
        for sample, parts in zip(samples, zip(similarity, coverage, strict=True), strict=True):
            failed = _errored(self.name, sample)
            values = [part.value for part in parts if part.value is not None]
            if failed is None and not values:
                failed = Score.not_applicable(
                    self.name, "the example has no reference answer (example.expected) and no facts (example.facts)"
                )
            if failed is None:
                details = {part.metric: part.value for part in parts}
                failed = Score(self.name, round(sum(values) / len(values), 6), details=details)
            out.append(failed)
        return out


class RefusalCorrectness:
    """Refusal correctness: 1.0 when the system refuses exactly when ``example.answerable`` is False, else 0.0.

    A refusal is ``sample.abstained`` or `is_refusal` (``sample.output``). ``details`` says whether it refused and
    whether it should have.
    """

    name = "refusal_correctness"
    higher_is_better = True

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        out: list[Score] = []
        for sample in samples:
            failed = _errored(self.name, sample)
            if failed is not None:
                out.append(failed)
                continue
            did = refused(sample)
            should = not sample.example.answerable
            out.append(
                Score(self.name, 1.0 if did == should else 0.0, details={"refused": did, "answerable": not should})
            )
        return out
