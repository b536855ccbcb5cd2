"""The judge on the bundled SmolLM2-135M: a JSON schema constrains its output through a llama.cpp grammar, and a
`JudgeMetric` over it gives every item a score or an explicit error."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from opentelemetry import trace

from llmops import ModelConfig
from llmops.evaluation._judge import JudgeMetric, seed_judge_prompts
from llmops.evaluation._types import Example, MetricDeps, Sample, ScoringContext
from llmops.gateway import ChatRequest, Gateway, LocalLlamaProvider, ProviderError, TextDelta
from llmops.prompts import PromptRegistry
from llmops.store import Store

MODEL = "smollm2-135m-instruct"
VERDICT = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def provider() -> LocalLlamaProvider:
    return LocalLlamaProvider(threads=1, batch_threads=2)


def _text(provider: LocalLlamaProvider, request: ChatRequest) -> str:
    async def run() -> str:
        return "".join([e.text async for e in provider.stream("m", request) if isinstance(e, TextDelta)])

    return asyncio.run(run())


def test_a_json_schema_makes_the_bundled_model_write_valid_json(provider: LocalLlamaProvider) -> None:
    messages = [{"role": "user", "content": "Rate the answer '15 days' to 'How many PTO days?' from 1 to 5."}]
    response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}
    constrained = _text(
        provider, ChatRequest(model="m", messages=messages, max_tokens=120, response_format=response_format)
    )
    verdict = json.loads(constrained)
    jsonschema.validate(verdict, VERDICT)
    again = _text(provider, ChatRequest(model="m", messages=messages, max_tokens=120, response_format=response_format))
    assert again == constrained  # the cached grammar gives the same greedy answer


def test_json_object_mode_writes_a_json_object(provider: LocalLlamaProvider) -> None:
    messages = [{"role": "user", "content": "Give a JSON object with the keys city and country for Paris."}]
    text = _text(
        provider, ChatRequest(model="m", messages=messages, max_tokens=60, response_format={"type": "json_object"})
    )
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize(
    ("response_format", "says"),
    [
        ({"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "(("}}}, "cannot turn"),
        ({"type": "json_schema", "json_schema": {"schema": {"$ref": "#/definitions/missing"}}}, "cannot turn"),
        ({"type": "json_schema", "json_schema": {"name": "no-schema"}}, "needs a 'schema' object"),
        ({"type": "xml"}, "unsupported response_format type 'xml'"),
    ],
)
def test_a_schema_llama_cpp_cannot_use_is_a_400(
    provider: LocalLlamaProvider, response_format: dict[str, object], says: str
) -> None:
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], response_format=response_format)
    with pytest.raises(ProviderError, match=says) as caught:
        _text(provider, request)
    assert caught.value.status == 400


@pytest.fixture
def deps(tmp_path: Path, provider: LocalLlamaProvider) -> Iterator[MetricDeps]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    prompts = PromptRegistry(store)
    seed_judge_prompts(prompts)
    gateway = Gateway([ModelConfig(name=MODEL, provider="local")], {MODEL: provider}, trace.get_tracer("test"))
    yield MetricDeps(gateway=gateway, prompts=prompts, judge_model=MODEL)
    store.engine.dispose()


def test_the_bundled_judge_scores_every_item(deps: MetricDeps) -> None:
    items = [
        ("How many PTO days do new employees get?", "15 days of PTO.", "New employees get 15 days of PTO."),
        ("What is the capital of France?", "Berlin.", "Paris is the capital of France."),
        ("Who approves expense reports?", "Your manager approves them.", "The employee's manager approves expenses."),
    ]
    samples = [
        Sample(Example(id=f"e{n}", input=q, expected=ref, metadata={"human_score": 5 - 4 * (n == 1)}), answer)
        for n, (q, answer, ref) in enumerate(items)
    ]
    metric = JudgeMetric.from_params({"rubric": "judge-correctness"}, deps)
    started = time.perf_counter()
    scores = asyncio.run(metric.score(samples, ScoringContext(deps)))
    elapsed = time.perf_counter() - started
    rate = len(samples) / elapsed
    print(f"\njudge-correctness on SmolLM2-135M: {rate:.2f} items/s ({elapsed:.1f} s for {len(samples)} items)")
    for score in scores:
        print(f"  {score.value} {score.error or ''} {score.details.get('score')} {score.details.get('reason', '')!r}")
    assert len(scores) == len(samples)
    for score in scores:
        assert score.metric == "judge_correctness"
        if score.value is None:
            assert score.error  # an explicit reason, never a silent gap
        else:
            assert not math.isnan(score.value) and 0.0 <= score.value <= 1.0
            assert score.details["score"] in range(1, 6) and score.details["attempts"] >= 1
        assert score.details["human_score"] in (1, 5)
    # The grammar makes every reply parse on the first attempt.
    assert all(s.value is not None and s.details["attempts"] == 1 for s in scores)
