"""Semantic cache quality: hit rate on true paraphrases and false-hit rate on near misses, through the gateway.

For each pair, the first question is asked (and cached), then the second; a hit on a paraphrase is right, a hit on a
near miss ("reset my password" → the cached answer to "reset my username") is a wrong answer served. The pairs are
in bench/semantic_cache_pairs.py: a tuning set (used to choose the matching rule) and a held-out set (never used
for tuning). Also reports what embedding similarity alone (no content-word rule) would do at the same threshold.

    .venv/bin/python bench/semantic_cache.py [--threshold 0.85]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llmops import ModelConfig
from llmops._settings import GatewaySettings
from llmops.gateway import Caller, ChatRequest, Gateway
from llmops.knowledge import MiniLMEmbedder
from llmops.testing import ScriptedProvider
from semantic_cache_pairs import HELD_OUT_NEAR_MISSES, HELD_OUT_PARAPHRASES, NEAR_MISSES, PARAPHRASES


def hit_rate(embedder: MiniLMEmbedder, threshold: float, pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """(rate through the gateway's semantic cache, rate of similarity alone at the same threshold)."""
    settings = GatewaySettings(semantic_cache=True, semantic_cache_threshold=threshold, cache=True)
    models = [ModelConfig(name="m", provider="scripted")]
    gateway = Gateway(models, {"m": ScriptedProvider("answer")}, TracerProvider().get_tracer("bench"),
                      settings=settings, semantic_embed=embedder.embed)  # fmt: skip

    async def run() -> tuple[int, int]:
        hits = naive = 0
        for i, (first, second) in enumerate(pairs):
            caller = Caller(team=f"pair-{i}")  # one scope per pair: pairs never see each other's answers
            await gateway.complete(ChatRequest(model="m", messages=[{"role": "user", "content": first}]), caller=caller)
            result = await gateway.complete(ChatRequest(model="m", messages=[{"role": "user", "content": second}]),
                                            caller=caller)  # fmt: skip
            hits += result.cache_hit == "semantic"
            vectors = embedder.embed([first, second])
            naive += float(vectors[0] @ vectors[1]) >= threshold
        return hits, naive

    hits, naive = asyncio.run(run())
    return hits / len(pairs), naive / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=GatewaySettings().semantic_cache_threshold)
    args = parser.parse_args()
    embedder = MiniLMEmbedder()
    rows = {
        "tuning paraphrases (hit rate)": hit_rate(embedder, args.threshold, PARAPHRASES),
        "tuning near misses (false-hit rate)": hit_rate(embedder, args.threshold, NEAR_MISSES),
        "held-out paraphrases (hit rate)": hit_rate(embedder, args.threshold, HELD_OUT_PARAPHRASES),
        "held-out near misses (false-hit rate)": hit_rate(embedder, args.threshold, HELD_OUT_NEAR_MISSES),
    }
    print(f"semantic cache, all-MiniLM-L6-v2, threshold {args.threshold}\n")
    print(f"{'pairs':<40}{'llmops':>10}{'similarity only':>18}")
    for name, (rate, naive) in rows.items():
        print(f"{name:<40}{rate:>10.2f}{naive:>18.2f}")
    values = list(rows.values())
    print(json.dumps({
        "threshold": args.threshold,
        "paraphrase_hit_rate": round(values[0][0], 3),
        "near_miss_false_hit_rate": round(values[1][0], 3),
        "held_out_paraphrase_hit_rate": round(values[2][0], 3),
        "held_out_near_miss_false_hit_rate": round(values[3][0], 3),
        "similarity_only_near_miss_false_hit_rate": round(values[1][1], 3),
        "similarity_only_held_out_false_hit_rate": round(values[3][1], 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
