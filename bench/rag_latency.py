"""RAG latency on the sample handbook, stage by stage, and the bundled model's speed inside llmops vs raw.

For each question the benchmark runs the full RAG request (retrieve, pack, render, generate, trace written to the
store), then generates from the very same prompt tokens with llama.cpp directly (``Llama.generate``, same settings,
same model instance, same thread count). Decode speed is measured the same way for both: tokens after the first,
over the time from the first to the last token.

    .venv/bin/python bench/rag_latency.py [--questions 200]

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import llama_cpp

from llmops import Platform, Settings
from llmops.gateway import ChatRequest, LocalLlamaProvider, StreamEvent

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "samples" / "handbook"
STAGES = ("guardrails.input", "retrieve", "pack_context", "render_prompt", "generate", "guardrails.output")


class RecordingProvider:
    """Wraps the local provider and keeps the last messages it was asked to answer."""

    def __init__(self, inner: LocalLlamaProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.last_messages: list[dict[str, str]] = []

    def count_tokens(self, model: str, text: str) -> int:
        return self.inner.count_tokens(model, text)

    def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.last_messages = request.messages
        return self.inner.stream(model, request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def raw_decode(provider: LocalLlamaProvider, messages: list[dict[str, str]], max_tokens: int) -> tuple[int, float]:
    """Generate with llama.cpp directly; returns (tokens, decode tokens/s)."""
    llama = provider.llama
    tokens = provider.prompt_tokens(messages)
    llama.reset()
    vocab = llama._model.vocab
    produced = 0
    first = last = 0.0
    for token in llama.generate(tokens, temp=0.0, top_p=1.0, top_k=40, repeat_penalty=1.0, reset=False):
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            break
        llama.detokenize([token])
        last = time.perf_counter()
        if produced == 0:
            first = last
        produced += 1
        if produced >= max_tokens:
            break
    return produced, (produced - 1) / (last - first) if produced > 1 and last > first else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def questions(n: int) -> list[str]:
    base = [line.strip() for line in (HERE / "handbook_questions.txt").read_text().splitlines() if line.strip()]
    framings = ("{q}", "Quick question: {q}", "According to the handbook, {q}", "Please tell me: {q}")
    out = [framing.format(q=q[0].lower() + q[1:] if framing != "{q}" else q) for framing in framings for q in base]
    return out[:n]


async def run(n: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    settings = Settings(data_dir=data_dir)
    local = LocalLlamaProvider(threads=settings.llm_threads, batch_threads=settings.llm_batch_threads)
    recorder = RecordingProvider(local)
    platform = Platform(settings, providers={settings.models[0].name: recorder})
    platform.knowledge.ingest(SAMPLES)
    pipeline = platform.rag()
    max_tokens = pipeline.config.max_answer_tokens
    for warmup in ("How many PTO days do new employees get?", "What is the hotel limit?"):
        await pipeline.ask(warmup)

    stage_ms: dict[str, list[float]] = {stage: [] for stage in STAGES}
    total_ms: list[float] = []
    minus_generation_ms: list[float] = []
    ttft_ms: list[float] = []
    ours_tps: list[float] = []
    raw_tps: list[float] = []
    abstained = 0
    for question in questions(n):
        started = time.perf_counter()
        answer = await pipeline.ask(question)
        elapsed = (time.perf_counter() - started) * 1000
        total_ms.append(elapsed)
        for stage in STAGES:
            if stage in answer.stages_ms:
                stage_ms[stage].append(answer.stages_ms[stage])
        minus_generation_ms.append(elapsed - answer.stages_ms.get("generate", 0.0))
        if answer.abstained:
            abstained += 1
            continue
        trace = platform.traces.get(answer.request_id)
        chat = next(s for s in trace["spans"] if s["name"].startswith("chat "))["attributes"]
        ttft_ms.append(chat["llmops.ttft_ms"])
        if chat["gen_ai.usage.output_tokens"] > 8:  # too few tokens make a noisy rate
            ours_tps.append(chat["llmops.tokens_per_s"])
            raw_tps.append(raw_decode(local, recorder.last_messages, max_tokens)[1])
    await platform.aclose()

    figures: dict[str, Any] = {"questions": n, "abstained": abstained, "generation_samples": len(ours_tps)}
    for stage, values in stage_ms.items():
        key = stage.replace(".", "_")
        figures[f"{key}_p50_ms"] = round(percentile(values, 50), 3)
        figures[f"{key}_p95_ms"] = round(percentile(values, 95), 3)
    figures["ttft_p50_ms"] = round(percentile(ttft_ms, 50), 1)
    figures["ttft_p95_ms"] = round(percentile(ttft_ms, 95), 1)
    figures["request_p50_ms"] = round(percentile(total_ms, 50), 1)
    figures["request_p95_ms"] = round(percentile(total_ms, 95), 1)
    figures["request_minus_generation_p50_ms"] = round(percentile(minus_generation_ms, 50), 3)
    figures["request_minus_generation_p95_ms"] = round(percentile(minus_generation_ms, 95), 3)
    figures["generation_tokens_per_s"] = round(statistics.median(ours_tps), 1) if ours_tps else None
    figures["raw_tokens_per_s"] = round(statistics.median(raw_tps), 1) if raw_tps else None
    ratios = [ours / raw for ours, raw in zip(ours_tps, raw_tps, strict=True) if raw > 0]
    figures["generation_tokens_per_s_ratio_to_raw"] = round(statistics.median(ratios), 3) if ratios else None
    return figures


def print_table(figures: dict[str, Any]) -> None:
    print(f"RAG latency over {figures['questions']} questions ({figures['abstained']} answered 'I don't know')\n")
    print(f"{'stage':<28}{'p50 ms':>12}{'p95 ms':>12}")
    for stage in STAGES:
        key = stage.replace(".", "_")
        print(f"{stage:<28}{figures[key + '_p50_ms']:>12.2f}{figures[key + '_p95_ms']:>12.2f}")
    print(f"{'time to first token':<28}{figures['ttft_p50_ms']:>12.1f}{figures['ttft_p95_ms']:>12.1f}")
    print(f"{'whole request':<28}{figures['request_p50_ms']:>12.1f}{figures['request_p95_ms']:>12.1f}")
    print(
        f"{'request minus generation':<28}{figures['request_minus_generation_p50_ms']:>12.2f}"
        f"{figures['request_minus_generation_p95_ms']:>12.2f}"
    )
    print(f"\ngeneration decode speed (median over {figures['generation_samples']} answers)")
    print(f"{'llmops (provider, streamed)':<28}{figures['generation_tokens_per_s']!s:>12} tokens/s")
    print(f"{'llama.cpp raw (Llama.generate)':<28}{figures['raw_tokens_per_s']!s:>12} tokens/s")
    print(f"{'ratio llmops / raw':<28}{figures['generation_tokens_per_s_ratio_to_raw']!s:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=200)
    args = parser.parse_args()
    figures = asyncio.run(run(args.questions))
    print_table(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
