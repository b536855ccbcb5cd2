"""Is an answer supported by the context it was given? One checker for the output rail and for offline evaluation.

The answer is split into claims (sentences; questions, greetings and citation-only pieces are skipped). Each claim
is checked in tiers, cheapest first:

1. **Facts.** Numbers (with units, money and percentages normalised), years, month names and proper names in the claim
   must all occur in the context. A claim that states a figure the context does not contain is unsupported whatever
   else it shares with the context: that is the hallucination that hurts most in RAG ("20 days" for "15 days").
2. **Words.** The share of the claim's content words (stop words removed, light stemming) found in the context. A
   claim whose words are almost all there is supported; one that shares almost none is not.
3. **Meaning.** Only for claims in between, and only with an embedder: the cosine similarity between the claim and
   its closest context sentences (MiniLM by default), so paraphrases are not punished for their wording.

The report has a verdict per claim and an overall score: the share of claim characters that are supported (1.0 for
an answer with no checkable claims).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from llmops.guardrails._findings import Finding
from llmops.guardrails._text import split_sentences
from llmops.knowledge import Embedder

__all__ = ["ClaimVerdict", "GroundingChecker", "GroundingReport"]

_STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just let me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up upon us very was we were
    what when where which while who whom why will with would you your yours yourself yourselves may might must shall
    per via within without across among around however therefore thus also etc e g ie i.e e.g yes okay ok well
    really""".split()  # noqa: SIM905 - a word list reads better as text
)
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6,
    "billion": 10**9, "half": 0.5, "once": 1, "twice": 2, "single": 1, "double": 2, "triple": 3, "dozen": 12,
}  # fmt: skip
_LOOSE_NUMBER_WORDS = frozenset({"once", "twice", "half", "single", "double", "triple", "dozen"})
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "million": 1e6, "bn": 1e9, "b": 1e9, "billion": 1e9}
_NUMBER = re.compile(
    r"(?<![\w.])[$€£¥]?\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\s?(k|m|mn|bn|b|thousand|million|billion)?\b(%)?",
    re.IGNORECASE,
)
_MONTHS = re.compile(
    r"\b(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*[A-Za-z]|[A-Za-z]")
_CITATION = re.compile(r"\[\d+(?:\s*[,–-]\s*\d+)*\]")
_PROPER = re.compile(r"(?<![\w'’])[A-Z][A-Za-z]*(?:[\-'’][A-Z]?[a-z]+)*(?:\s+[A-Z][A-Za-z]*)*")
_NOT_CLAIMS = re.compile(
    r"(?i)^(?:i hope (?:this|that) helps|let me know|feel free|thank you|thanks|happy to help|hope this helps|"
    r"is there anything else|if you have any (?:other |more )?questions|sure[,!.]?$|certainly[,!.]?$|of course[,!.]?$|"
    r"great question|good question|here (?:is|are) (?:a|an|the|some)\b[^.]{0,40}:$)"
)
# Words that begin sentences in capitals without naming anything.
_COMMON_CAPITALISED = frozenset(
    """the a an this that these those it its i we you he she they there here in on at for if when while after before as
    by from to of with and but or so yes no not also however therefore then each every all some any most many new
    our your their his her my what which who how why where please note see""".split()  # noqa: SIM905 - a word list reads better as text
)


@dataclass(frozen=True)
class ClaimVerdict:
    """Whether one claim of the answer is supported by the context.

    Attributes:
        start: Offset of the claim in the answer.
        end: Offset after the claim.
        supported: The verdict.
        score: Support in [0, 1]: 0 when a fact is missing, else the word overlap or, when it was computed and is
            higher, the embedding similarity.
        missing: Facts of the claim absent from the context (numbers, month names, proper names), as written.
        overlap: Share of the claim's content words found in the context.
        similarity: Best cosine similarity to a context sentence, when the embedding tier ran.
        reason: ``"facts missing"``, ``"words found"``, ``"similar meaning"`` or ``"not supported"``.
    """

    start: int
    end: int
    supported: bool
    score: float
    missing: tuple[str, ...]
    overlap: float
    similarity: float | None
    reason: str


@dataclass(frozen=True)
class GroundingReport:
    """Verdicts for every claim and the overall grounding score (share of claim characters supported)."""

    score: float
    claims: tuple[ClaimVerdict, ...] = field(default_factory=tuple)

    @property
    def supported(self) -> bool:
        """Whether every claim is supported."""
        return all(claim.supported for claim in self.claims)

    @property
    def unsupported(self) -> list[ClaimVerdict]:
        return [claim for claim in self.claims if not claim.supported]


class GroundingChecker:
    """Checks each claim of an answer against the retrieved context (see the module notes for the tiers).

    Example:
        >>> checker = GroundingChecker()  # facts and words only; pass MiniLMEmbedder() for the semantic tier
        >>> context = ["New employees get 15 days of paid time off per year."]
        >>> report = checker.check("New employees get 20 days of paid time off.", context)
        >>> report.score, report.claims[0].missing
        (0.0, ('20',))
    """

    name = "grounding"

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        supported_overlap: float = 0.75,
        unsupported_overlap: float = 0.2,
        min_similarity: float = 0.7,
        fallback_overlap: float = 0.6,
        evidence_sentences: int = 3,
    ) -> None:
        """Configure the tiers.

        Args:
            embedder: Turns texts into unit vectors for the semantic tier (e.g. ``llmops.knowledge.MiniLMEmbedder``);
                without one, claims between the two overlap bounds are judged against ``fallback_overlap``.
            supported_overlap: Word overlap at or above which a claim (with its facts present) is supported.
            unsupported_overlap: Word overlap below which a claim is unsupported without asking the embedder.
            min_similarity: Cosine similarity at or above which the semantic tier calls a claim supported.
            fallback_overlap: The word overlap that decides claims in between when there is no embedder.
            evidence_sentences: How many context sentences (those sharing most words) the claim is embedded against.
        """
        if not 0.0 <= unsupported_overlap <= fallback_overlap <= supported_overlap <= 1.0:
            raise ValueError("need 0 <= unsupported_overlap <= fallback_overlap <= supported_overlap <= 1")
        self._fallback_overlap = fallback_overlap
        self._embedder = embedder
        self._supported_overlap = supported_overlap
        self._unsupported_overlap = unsupported_overlap
        self._min_similarity = min_similarity
        self._evidence_sentences = evidence_sentences

    def check(self, answer: str, context: Sequence[str]) -> GroundingReport:
        """Verdicts for the claims of ``answer`` given the ``context`` passages (e.g. the retrieved chunks)."""
        joined = "\n".join(context)
        context_facts = _facts(joined, proper_names=False)
        context_lower = joined.lower()
        sentences = [joined[s:e] for s, e in split_sentences(joined)]
        # Support is judged against one sentence or two neighbours, not the whole context: a long context contains
        # most words of any on-topic claim, and a number elsewhere in it proves nothing about this claim.
        windows = [*sentences, *(f"{a} {b}" for a, b in pairwise(sentences))]
        sentence_words = [_content_words(s) for s in sentences]
        sentence_numbers = [frozenset(_numbers(s)) for s in sentences]
        window_words = [*sentence_words, *(a | b for a, b in pairwise(sentence_words))]
        window_numbers = [*sentence_numbers, *(a | b for a, b in pairwise(sentence_numbers))]
        vectors: dict[int, np.ndarray] = {}

        verdicts: list[ClaimVerdict] = []
        for start, end in split_sentences(answer):
            claim = _CITATION.sub("", answer[start:end]).strip()
            words = _content_words(claim)
            if claim.endswith("?") or _NOT_CLAIMS.search(claim) or (len(words) < 2 and not _numbers(claim)):
                continue
            shared = [len(words & w) for w in window_words]
            ranked = sorted(range(len(windows)), key=lambda i: -shared[i])[: self._evidence_sentences]
            evidence_numbers = frozenset().union(*(window_numbers[i] for i in ranked)) if ranked else frozenset()
            missing = _missing_facts(claim, context_facts, evidence_numbers, context_lower)
            overlap = max(shared, default=0) / len(words) if words else 1.0
            similarity: float | None = None
            if missing:
                verdict = ClaimVerdict(start, end, False, 0.0, missing, overlap, None, "facts missing")
            elif overlap >= self._supported_overlap:
                verdict = ClaimVerdict(start, end, True, overlap, (), overlap, None, "words found")
            elif overlap < self._unsupported_overlap or self._embedder is None or not windows:
                supported = self._embedder is None and overlap >= self._fallback_overlap
                reason = "words found" if supported else "not supported"
                verdict = ClaimVerdict(start, end, supported, overlap, (), overlap, None, reason)
            else:
                similarity = self._similarity(claim, ranked, sentences, vectors)
                supported = similarity >= self._min_similarity
                score = max(overlap, similarity)
                reason = "similar meaning" if supported else "not supported"
                verdict = ClaimVerdict(start, end, supported, score, (), overlap, similarity, reason)
            verdicts.append(verdict)
        total = sum(v.end - v.start for v in verdicts)
        score = sum(v.end - v.start for v in verdicts if v.supported) / total if total else 1.0
        return GroundingReport(round(score, 4), tuple(verdicts))

    def detect(self, text: str, context: Sequence[str]) -> list[Finding]:
        """An ``UNSUPPORTED_CLAIM`` finding for each claim of ``text`` the ``context`` does not support.

        The score is how unsupported the claim is (1 - its support score).
        """
        return [
            Finding(
                "UNSUPPORTED_CLAIM",
                v.start,
                v.end,
                round(1.0 - v.score, 4),
                self.name,
                v.reason + (f": {len(v.missing)} fact(s) absent from the context" if v.missing else ""),
            )
            for v in self.check(text, context).claims
            if not v.supported
        ]

    def _similarity(self, claim: str, ranked: list[int], sentences: list[str], vectors: dict[int, np.ndarray]) -> float:
        assert self._embedder is not None

        # Embedding every context sentence would cost more than the rest of the check; the windows sharing most
        # words with the claim are where its support would be. Windows past the sentences are neighbour pairs.
        def text_of(index: int) -> str:
            if index < len(sentences):
                return sentences[index]
            first = index - len(sentences)
            return f"{sentences[first]} {sentences[first + 1]}"

        todo = [i for i in ranked if i not in vectors]
        embedded = self._embedder.embed([claim] + [text_of(i) for i in todo])
        for row, index in enumerate(todo, start=1):
            vectors[index] = embedded[row]
        return float(max(float(embedded[0] @ vectors[i]) for i in ranked))


def _stem(word: str) -> str:
    """A light suffix strip, so "policies"/"policy" and "approved"/"approve" meet; not a real stemmer."""
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + replacement
    return word


def _content_words(text: str) -> set[str]:
    return {
        _stem(w)
        for w in (m.group().lower().strip("'’") for m in _WORD.finditer(text))
        if w not in _STOP_WORDS and len(w) > 1
    }


def _numbers(text: str) -> set[float]:
    values: set[float] = set()
    for match in _NUMBER.finditer(text):
        whole, fraction, scale, _percent = match.groups()
        value = float(whole.replace(",", "") + ("." + fraction if fraction else ""))
        values.add(value)
        if scale:
            values.add(value * _SCALE[scale.lower()])
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _NUMBER_WORDS:
            values.add(float(_NUMBER_WORDS[word]))
    return values


@dataclass(frozen=True)
class _Facts:
    numbers: frozenset[float]
    months: frozenset[str]
    names: tuple[str, ...]


def _facts(text: str, *, proper_names: bool = True) -> _Facts:
    months = frozenset(m.group()[:3].lower() for m in _MONTHS.finditer(text))
    names: list[str] = []
    if proper_names:
        for match in _PROPER.finditer(text):
            tokens = match.group().split()
            # A capitalised first word of a sentence is usually just that; names are the rest of the run.
            sentence_start = text[: match.start()].rstrip()[-1:] in (".", "!", "?", ":", "")
            if sentence_start or tokens[0].lower() in _COMMON_CAPITALISED:
                tokens = tokens[1:]
            tokens = [t for t in tokens if t.lower() not in _COMMON_CAPITALISED and not _MONTHS.fullmatch(t)]
            if tokens:
                names.append(" ".join(tokens))
    return _Facts(frozenset(_numbers(text)), months, tuple(names))


def _missing_facts(
    claim: str, context: _Facts, evidence_numbers: frozenset[float], context_lower: str
) -> tuple[str, ...]:
    """Facts of ``claim`` the context lacks: numbers absent from the claim's best evidence, months and names absent
    from the whole context."""
    claim_facts = _facts(claim)
    missing: list[str] = []
    for match in _NUMBER.finditer(claim):
        whole, fraction, scale, _percent = match.groups()
        value = float(whole.replace(",", "") + ("." + fraction if fraction else ""))
        scaled = value * _SCALE[scale.lower()] if scale else value
        if value not in evidence_numbers and scaled not in evidence_numbers:
            missing.append(match.group().strip())
    for word in re.findall(r"[a-z]+", claim.lower()):
        # Number words count only when they are quantities the context could contradict ("twenty days").
        quantity = _NUMBER_WORDS.get(word)
        loose = quantity is None or quantity < 2 or word in _LOOSE_NUMBER_WORDS
        if not loose and float(quantity or 0) not in evidence_numbers:
            missing.append(word)
    missing.extend(sorted(m for m in claim_facts.months if m not in context.months))
    for name in claim_facts.names:
        # Every word of a multi-word name must occur ("Ana Ruiz" is supported by "Ruiz (Ana)", not by "Ana Lopez").
        if not all(re.search(rf"\b{re.escape(part.lower())}\b", context_lower) for part in name.split()):
            missing.append(name)
    return tuple(dict.fromkeys(missing))
