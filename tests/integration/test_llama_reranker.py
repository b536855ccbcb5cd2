"""The local reranker runs the bundled GGUF model offline and gives each passage its own finite score."""

from __future__ import annotations

import math

import pytest

from llmops.knowledge import LlamaReranker

pytestmark = pytest.mark.models


def test_the_bundled_model_scores_every_passage() -> None:
    reranker = LlamaReranker(threads=1)
    scores = reranker.rerank(
        "How many PTO days do new employees get?",
        [
            "New employees get 15 days of paid time off (PTO) per year.",
            "Report phishing emails with the Report button.",
        ],
    )
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert scores[0] != scores[1]
    assert reranker.rerank("q", []) == []
