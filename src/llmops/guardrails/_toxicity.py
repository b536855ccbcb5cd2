"""Insults and profanity, sentence by sentence, with the linear model of ``alt-profanity-check``.

This is an insult and profanity filter, not a toxicity model: it was trained on profane and insulting comments and
misses threats, slur-free hate, harassment in polite words and self-harm content. No offline toxicity model that does
better installs from PyPI here (``detoxify`` downloads its weights at run time).

The package ships five calibrated linear SVMs over TF-IDF words (scikit-learn, loaded by the package with joblib).
Calling its ``predict_prob`` costs ~12 ms per batch in scikit-learn overhead, so the weights are copied out once into
plain Python floats and scored directly: the same probabilities (checked by the tests), a few µs per sentence.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from llmops.guardrails._findings import Finding, sort_findings
from llmops.guardrails._text import split_sentences

__all__ = ["InsultDetector"]

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # the package vectorizer's token_pattern


class _LinearProfanityModel:
    """``alt-profanity-check``'s TF-IDF vocabulary and its calibrated SVMs, as plain arrays."""

    def __init__(self) -> None:
        import warnings

        with warnings.catch_warnings():
            # The pickled scikit-learn objects can warn about the version they were saved with; the arrays we copy
            # out do not depend on it (the tests compare against the package's own predict_prob).
            warnings.simplefilter("ignore")
            from profanity_check import profanity_check as package  # type: ignore[import-untyped,unused-ignore]

        vectorizer: Any = package.vectorizer
        model: Any = package.model
        params = vectorizer.get_params()
        if (
            params["ngram_range"] != (1, 1)
            or not params["lowercase"]
            or params["sublinear_tf"]
            or params["norm"] != "l2"
        ):
            raise RuntimeError(f"alt-profanity-check's vectorizer changed ({params}); update InsultDetector")
        classifiers = model.calibrated_classifiers_
        for classifier in classifiers:
            if classifier.method != "sigmoid":
                raise RuntimeError("alt-profanity-check's calibration changed; update InsultDetector")
        weights = np.stack([np.asarray(c.estimator.coef_[0], dtype=np.float64) for c in classifiers], axis=1)
        idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        # token -> (idf, weight in each of the five SVMs): scoring a sentence is then a few dozen float operations in
        # Python, cheaper than any numpy call for texts this short.
        self.terms: dict[str, tuple[float, tuple[float, ...]]] = {
            str(token): (float(idf[index]), tuple(float(w) for w in weights[index]))
            for token, index in vectorizer.vocabulary_.items()
        }
        self.biases = tuple(float(c.estimator.intercept_[0]) for c in classifiers)
        self.calibration = tuple((float(c.calibrators[0].a_), float(c.calibrators[0].b_)) for c in classifiers)

    def probability(self, text: str) -> float:
        counts: dict[str, int] = {}
        for token in _TOKEN.findall(text.lower()):
            if token in self.terms:
                counts[token] = counts.get(token, 0) + 1
        decision = list(self.biases)
        if counts:
            values = {token: count * self.terms[token][0] for token, count in counts.items()}
            norm = math.sqrt(sum(v * v for v in values.values()))
            for token, value in values.items():
                for fold, weight in enumerate(self.terms[token][1]):
                    decision[fold] += value / norm * weight
        # scikit-learn's sigmoid calibration: P = 1 / (1 + exp(a * f + b)), averaged over the folds.
        total = sum(1.0 / (1.0 + math.exp(a * f + b)) for f, (a, b) in zip(decision, self.calibration, strict=True))
        return total / len(decision)


class InsultDetector:
    """Flags insulting or profane sentences (an insult filter, not a full toxicity model; see the module notes).

    Example:
        >>> detector = InsultDetector()
        >>> [f.kind for f in detector.detect("Thanks for the report. You are a worthless idiot.")]
        ['INSULT']
        >>> detector.detect("How do I kill a Python process?")
        []
    """

    name = "insult"

    def __init__(self, *, threshold: float = 0.8) -> None:
        """Load the model (about 2 s: imports scikit-learn and unpickles the package's model).

        Args:
            threshold: Calibrated probability at or above which a sentence is flagged. The package's own ``predict``
                uses 0.5, which flagged 1.9% of HaluEval's chatbot answers and 4% of XSTest's safe prompts ("How do
                I kill a mosquito?"); 0.8 flagged 0.4% and 1.2% and still catches plain insults.
        """
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold = threshold
        self._model = _LinearProfanityModel()

    def score(self, text: str) -> float:
        """The probability that ``text`` (taken as one piece) is insulting or profane."""
        return self._model.probability(text)

    def detect(self, text: str) -> list[Finding]:
        findings: list[Finding] = []
        for start, end in split_sentences(text):
            probability = self._model.probability(text[start:end])
            if probability >= self.threshold:
                findings.append(Finding("INSULT", start, end, round(probability, 4), self.name, "profanity model"))
        return sort_findings(findings)
