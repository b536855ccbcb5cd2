"""The insult filter gives alt-profanity-check's own probabilities, sentence by sentence."""

from __future__ import annotations

import warnings

import pytest

from llmops.guardrails import Detector, InsultDetector


@pytest.fixture(scope="module")
def insults() -> InsultDetector:
    return InsultDetector()


def test_scores_equal_the_packages_own_probabilities(insults: InsultDetector) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from profanity_check import predict_prob

    texts = ["you are an idiot", "how do I kill a python process", "have a nice day", "", "Shut up, moron!!"]
    expected = [float(p) for p in predict_prob(texts)]
    assert [insults.score(t) for t in texts] == pytest.approx(expected, abs=1e-9)


def test_flags_the_insulting_sentence_only(insults: InsultDetector) -> None:
    text = "Thanks for the report. You are a worthless idiot. See you Monday."
    (finding,) = insults.detect(text)
    assert isinstance(insults, Detector)
    assert (finding.kind, finding.value(text)) == ("INSULT", "You are a worthless idiot.")
    assert finding.score >= 0.8


@pytest.mark.parametrize(
    "text",
    ["How do I kill a Python process?", "The quarterly numbers look strong.", "Please attack this problem head on."],
)
def test_leaves_ordinary_text_alone(insults: InsultDetector, text: str) -> None:
    assert insults.detect(text) == []


def test_threshold_is_validated() -> None:
    with pytest.raises(ValueError, match="threshold"):
        InsultDetector(threshold=-0.1)
