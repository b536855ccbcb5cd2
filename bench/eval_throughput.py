"""Evaluation throughput: every non-LLM metric over 1,000 recorded items, and the LLM-judge path with the bundled model.

The items are built from the sample handbook: each question (one of the 110 labelled handbook queries, phrased in
one of ten ways, so no two items share a question) gets the four chunks the platform retrieves for it as context,
an answer made of two or three sentences of those chunks (one item in four with a figure changed, as a
hallucination would), the labelled passage as the expected source, reference and key fact. Outputs are recorded, so
no generation is timed: only scoring, with a cold embedding memo (every text embedded once, as in a real run).

    .venv/bin/python bench/eval_throughput.py [--items 1000] [--judge-items 12]

Prints a table per metric, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import tempfile
import time
from pathlib import Path

from llmops import Platform, Settings
from llmops.evaluation import (
    Example,
    RelevantPassage,
    RetrievedContext,
    Sample,
    ScoringContext,
    build_metric,
    score_samples,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHRASINGS = (
    "{q}",
    "Quick question: {q}",
    "Can you tell me this: {q}",
    "I'd like to know. {q}",
    "Per the handbook, {q}",
    "Sorry to bother you, {q}",
    "Hi! {q}",
    "One more thing: {q}",
    "For my new hire paperwork, {q}",
    "My manager asked me: {q}",
)
NON_LLM_METRICS: list[tuple[str, dict[str, object]]] = [
    ("recall_at_k", {"k": 4}),
    ("precision_at_k", {"k": 4}),
    ("mrr", {}),
    ("ndcg_at_k", {"k": 4}),
    ("context_precision", {}),
    ("context_recall", {}),
    ("faithfulness", {}),
    ("answer_relevance", {}),
    ("answer_similarity", {}),
    ("fact_coverage", {}),
    ("correctness", {}),
    ("refusal_correctness", {}),
    ("contains", {}),
    ("regex", {"pattern": r"\d"}),
    ("length", {"max_words": 80}),
    ("latency", {"max_ms": 5000}),
    ("cost", {"max_usd": 0.01}),
    ("assertions", {}),
]
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"\b\d+\b")


def build_samples(platform: Platform, count: int, rng: random.Random) -> list[Sample]:
    queries = [json.loads(line) for line in (ROOT / "samples" / "handbook-queries.jsonl").read_text().splitlines()]
    queries = [q for q in queries if q["relevant"]]
    retrieved = {
        q["query"]: platform.knowledge.search(q["query"], k=4, mode="dense") for q in queries
    }  # retrieval is not what is measured: done once per query
    samples: list[Sample] = []
    for n in range(count):
        query = queries[n % len(queries)]
        phrasing = PHRASINGS[(n // len(queries)) % len(PHRASINGS)]
        hits = retrieved[query["query"]]
        sentences = [s for h in hits for s in _SENTENCE.split(h.text) if len(s.split()) > 4]
        chosen = rng.sample(sentences, min(len(sentences), rng.randint(2, 3)))
        if n % 4 == 0 and chosen:  # a hallucinated figure
            chosen[0] = _NUMBER.sub(lambda m: str(int(m.group()) + 7), chosen[0]) + " This applies to everyone."
        relevant = query["relevant"][0]
        example = Example(
            id=f"item-{n}",
            input=phrasing.format(q=query["query"]),
            expected=relevant["contains"],
            facts=(relevant["contains"], chosen[-1] if chosen else relevant["contains"]),
            sources=(RelevantPassage(relevant["source"], relevant["contains"]),),
            assertions=({"type": "length", "max_words": 120}, {"type": "not_contains", "value": "As an AI"}),
        )
        samples.append(
            Sample(
                example,
                " ".join(chosen),
                contexts=tuple(RetrievedContext(h.source, h.text, h.score, h.chunk_id) for h in hits),
                latency_ms=rng.uniform(800, 3000),
                cost_usd=0.0,
                input_tokens=300,
                output_tokens=40,
            )
        )
    return samples


async def time_metrics(platform: Platform, runs: dict[str, list[Sample]]) -> dict[str, tuple[float, int]]:
    """Seconds for all metrics together on each run of samples, in order, each with a fresh scoring context; and
    how many texts MiniLM embedded (the store's embedding cache serves the rest)."""
    deps = platform.metric_deps
    cached = platform.knowledge.cached_embedder
    metrics = [build_metric(name, dict(params), deps) for name, params in NON_LLM_METRICS]
    out: dict[str, tuple[float, int]] = {}
    for name, samples in runs.items():
        misses = cached.misses
        started = time.perf_counter()
        await score_samples(metrics, samples, ScoringContext(deps))
        out[name] = (time.perf_counter() - started, cached.misses - misses)
    return out


async def time_each_metric(platform: Platform, samples: list[Sample]) -> dict[str, tuple[float, float]]:
    """Per metric (embeddings already cached): seconds and mean score."""
    deps = platform.metric_deps
    out: dict[str, tuple[float, float]] = {}
    for name, params in NON_LLM_METRICS:
        metric = build_metric(name, dict(params), deps)
        started = time.perf_counter()
        rows = await score_samples([metric], samples, ScoringContext(deps))
        seconds = time.perf_counter() - started
        values = [v for row in rows if (v := row[metric.name].value) is not None]
        out[metric.name] = (seconds, sum(values) / len(values) if values else -1.0)
    return out


async def time_judge(platform: Platform, samples: list[Sample]) -> tuple[float, int, int]:
    """Items per second of the correctness judge on the bundled model, and how many scored / errored."""
    judge = build_metric("judge", {"rubric": "judge-correctness"}, platform.metric_deps)
    started = time.perf_counter()
    rows = await score_samples([judge], samples, ScoringContext(platform.metric_deps))
    seconds = time.perf_counter() - started
    values = [row[judge.name] for row in rows]
    return len(samples) / seconds, sum(1 for s in values if s.value is not None), sum(1 for s in values if s.error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--judge-items", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform(Settings(data_dir=Path(tmp)))
        try:
            platform.knowledge.ingest(ROOT / "samples" / "handbook")
            samples = build_samples(platform, args.items, random.Random(7))
            # The next run of the same dataset: same questions and references, new answers.
            next_run = build_samples(platform, args.items, random.Random(8))
            runs = asyncio.run(time_metrics(platform, {"cold": samples, "new outputs": next_run, "warm": samples}))
            per_metric = asyncio.run(time_each_metric(platform, samples))
            judge_rate, judged, judge_errors = asyncio.run(time_judge(platform, samples[: args.judge_items]))
        finally:
            platform.close()
    items = len(samples)
    print(f"{'metric (embeddings cached)':<28}{'seconds':>10}{'items/s':>12}{'mean':>8}")
    for name, (seconds, mean) in per_metric.items():
        print(f"{name:<28}{seconds:>10.2f}{items / seconds:>12.0f}{mean:>8.3f}")
    print()
    print(f"{'all non-LLM metrics':<28}{'seconds':>10}{'items/s':>12}{'embedded':>10}")
    for name, (seconds, embedded) in runs.items():
        print(f"{name:<28}{seconds:>10.2f}{items / seconds:>12.0f}{embedded:>10}")
    print(f"{'judge (bundled model)':<28}{args.judge_items / judge_rate:>10.2f}{judge_rate:>12.2f}"
          f"   scored {judged}, errored {judge_errors}")  # fmt: skip
    figures = {
        "items": items,
        "metrics": len(per_metric),
        "non_llm_seconds": round(runs["cold"][0], 3),
        "non_llm_items_per_s": round(items / runs["cold"][0], 1),
        "non_llm_items_per_s_new_outputs": round(items / runs["new outputs"][0], 1),
        "non_llm_items_per_s_warm": round(items / runs["warm"][0], 1),
        "texts_embedded_cold": runs["cold"][1],
        "texts_embedded_new_outputs": runs["new outputs"][1],
        "judge_items": args.judge_items,
        "judge_items_per_s": round(judge_rate, 3),
        "judge_scored": judged,
        "judge_errored": judge_errors,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
