"""The pytest plugin llmops registers (entry point ``pytest11``): the ``llmops_eval`` fixture.

Loading it costs pytest nothing: this module imports only pytest, and the metrics and the embedder are loaded the
first time a test asks for the fixture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from llmops.evaluation import EvalAssertion


@pytest.fixture(scope="session")
def llmops_eval() -> EvalAssertion:
    """``llmops_eval(output, metrics={...}, input=..., facts=..., contexts=...)`` asserts with llmops' metrics."""
    from llmops.evaluation import EvalAssertion, MetricDeps
    from llmops.guardrails import GroundingChecker
    from llmops.knowledge import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    return EvalAssertion(MetricDeps(embedder=embedder, grounding=GroundingChecker(embedder)))
