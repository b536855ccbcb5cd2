"""The grounding checker: facts, words and (with an embedder) meaning, claim by claim."""

from __future__ import annotations

import numpy as np
import pytest

from llmops.guardrails import ClaimVerdict, ContextualDetector, GroundingChecker
from llmops.guardrails._text import split_sentences
from llmops.testing import HashEmbedder

CONTEXT = [
    "New employees get 15 days of paid time off (PTO) per year, starting on their first day of work. "
    "PTO accrues monthly: 1.25 days are added to your balance at the end of each calendar month.",
    "After three full years of service, the allowance rises to 20 days of PTO per year. "
    "Questions go to Maria Lopez in HR. Carried-over days must be used by March 31.",
]


def verdicts(answer: str, checker: GroundingChecker | None = None) -> list[tuple[str, bool, tuple[str, ...]]]:
    report = (checker or GroundingChecker()).check(answer, CONTEXT)
    return [(answer[v.start : v.end], v.supported, v.missing) for v in report.claims]


def test_supported_claims_pass() -> None:
    answer = "New employees get fifteen days of PTO per year [1]. After 3 years it rises to 20 days."
    report = GroundingChecker().check(answer, CONTEXT)
    assert report.score == 1.0 and report.supported
    assert [v.reason for v in report.claims] == ["words found", "words found"]


def test_a_number_from_elsewhere_in_the_context_does_not_support_a_claim() -> None:
    # 20 is in the context, but about long-serving staff, not new employees.
    assert verdicts("New employees get 20 days of paid time off.") == [
        ("New employees get 20 days of paid time off.", False, ("20",))
    ]


def test_names_months_and_figures_must_be_in_the_context() -> None:
    claims = verdicts("Questions go to Maria Lopez in HR. The CEO John Smith approved it in June 2021.")
    assert claims[0][1] is True
    assert claims[1][1] is False and set(claims[1][2]) == {"2021", "jun", "CEO John Smith"}


def test_money_and_percentages_are_normalised() -> None:
    context = ["The hotel limit is $1,200 per night, and 15% of the budget is reserved."]
    report = GroundingChecker().check("The hotel limit is 1200 dollars per night; 15 % is reserved.", context)
    assert report.supported
    report = GroundingChecker().check("The hotel limit is $1,500 per night.", context)
    assert report.claims[0].missing == ("$1,500",)


def test_unrelated_claims_fail_and_pleasantries_are_not_claims() -> None:
    answer = "Employees can carry over unused days to the next decade. I hope this helps! Any other questions?"
    report = GroundingChecker().check(answer, CONTEXT)
    assert len(report.claims) == 1 and not report.claims[0].supported
    assert report.score == 0.0
    assert GroundingChecker().check("Thanks!", CONTEXT).score == 1.0


def test_score_weights_claims_by_length() -> None:
    answer = "New employees get 15 days of paid time off per year. Bonuses are paid in Bitcoin."
    report = GroundingChecker().check(answer, CONTEXT)
    assert [v.supported for v in report.claims] == [True, False]
    first, second = report.claims
    expected = (first.end - first.start) / ((first.end - first.start) + (second.end - second.start))
    assert report.score == pytest.approx(expected, abs=1e-4)


class FixedSimilarity:
    """An embedder whose claims all look alike: every text maps to the same unit vector."""

    name = "fixed"
    dimensions = 4
    max_tokens = 256

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.tile(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), (len(texts), 1))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return []


def test_semantic_tier_runs_only_for_inconclusive_claims() -> None:
    embedder = FixedSimilarity()
    checker = GroundingChecker(embedder, min_similarity=0.9)
    # Clearly supported by words: no embedding needed.
    assert checker.check("New employees get 15 days of paid time off per year.", CONTEXT).supported
    assert embedder.calls == 0
    # Half the words: the embedder decides (and with identical vectors it says "same meaning").
    report = checker.check("Staff receive paid days off every calendar month.", CONTEXT)
    assert embedder.calls == 1
    (claim,) = report.claims
    assert claim.reason == "similar meaning" and claim.similarity == pytest.approx(1.0)
    # A missing fact is decided before any embedding.
    assert not checker.check("New employees get 40 days off.", CONTEXT).supported
    assert embedder.calls == 1


def test_works_with_the_hash_embedder_and_as_a_contextual_detector() -> None:
    checker = GroundingChecker(HashEmbedder())
    assert isinstance(checker, ContextualDetector)
    findings = checker.detect("New employees get 20 days of paid time off.", CONTEXT)
    assert [(f.kind, f.detector) for f in findings] == [("UNSUPPORTED_CLAIM", "grounding")]
    assert findings[0].score == 1.0


def test_claim_verdict_fields() -> None:
    (claim,) = GroundingChecker().check("Questions go to Maria Lopez in HR.", CONTEXT).claims
    assert isinstance(claim, ClaimVerdict)
    assert claim.overlap == 1.0 and claim.similarity is None and claim.missing == ()


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="unsupported_overlap"):
        GroundingChecker(supported_overlap=0.2, unsupported_overlap=0.5)


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Dr. Ruiz joined in 2019. She leads the team.", ["Dr. Ruiz joined in 2019.", "She leads the team."]),
        ("The U.S. economy grew 2.5% in Q3. Prices rose.", ["The U.S. economy grew 2.5% in Q3.", "Prices rose."]),
        ("1. First item\n2. Second item", ["1. First item", "2. Second item"]),
        ('He said "Stop." Then left!', ['He said "Stop."', "Then left!"]),
        ("Intro:\n\n- a point\n- another", ["Intro:", "- a point", "- another"]),
    ],
)
def test_sentence_split(text: str, sentences: list[str]) -> None:
    assert [text[s:e] for s, e in split_sentences(text)] == sentences
