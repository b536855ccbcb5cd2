"""Prompt serving speed: the cached ``get``, an uncached ``resolve`` (a store read), and ``render`` of a RAG prompt.

    .venv/bin/python bench/prompts.py [--calls 20000]

Each call is timed on its own (perf_counter_ns); the table gives percentiles, the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops import Platform, Settings
from llmops.prompts import DEFAULT_RAG_PROMPT_NAME
from llmops.testing import HashEmbedder, ScriptedProvider

SOURCE = (
    "New employees get 15 days of paid time off (PTO) per year, starting on their first day of work. PTO accrues "
    "monthly: 1.25 days are added to your balance at the end of each calendar month. After three full years of "
    "service, the allowance rises to 20 days of PTO per year. After seven years it rises to 25 days per year. "
)


def timings_us(fn: Callable[[], Any], calls: int) -> list[float]:
    for _ in range(min(calls, 1000)):  # warm up caches and the interpreter
        fn()
    out = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        fn()
        out.append((clock() - start) / 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="llmops-bench-prompts-"))
    platform = Platform(
        Settings(data_dir=data_dir, prompt_cache_ttl_s=3600),
        embedder=HashEmbedder(),
        providers={"smollm2-135m-instruct": ScriptedProvider()},
    )
    prompts = platform.prompts
    version = prompts.get(DEFAULT_RAG_PROMPT_NAME)
    variables = {
        "question": "How many PTO days do new employees get?",
        "sources": [
            {
                "number": i + 1,
                "title": "Time Off Policy",
                "heading": f"Time Off Policy > Section {i}",
                "text": SOURCE,
                "source": "pto.md",
                "page": None,
            }
            for i in range(4)
        ],
    }
    rendered = prompts.render(version, variables)
    results = {
        "get_cached": timings_us(lambda: prompts.get(DEFAULT_RAG_PROMPT_NAME), args.calls),
        "resolve_uncached": timings_us(lambda: prompts.resolve(DEFAULT_RAG_PROMPT_NAME), max(200, args.calls // 20)),
        "render": timings_us(lambda: prompts.render(version, variables), args.calls),
    }
    platform.close()

    chars = sum(len(m["content"]) for m in rendered)
    print(f"prompt serving, {args.calls} calls each (resolve: fewer); the rendered RAG prompt is {chars} characters\n")
    print(f"{'operation':<22}{'p50 µs':>10}{'p95 µs':>10}{'p99 µs':>10}{'mean µs':>10}")
    for name, values in results.items():
        print(f"{name:<22}{pct(values, 50):>10.2f}{pct(values, 95):>10.2f}{pct(values, 99):>10.2f}"
              f"{statistics.fmean(values):>10.2f}")  # fmt: skip
    figures = {
        "get_cached_p50_us": round(pct(results["get_cached"], 50), 3),
        "get_cached_p99_us": round(pct(results["get_cached"], 99), 3),
        "resolve_uncached_p50_us": round(pct(results["resolve_uncached"], 50), 1),
        "render_p50_us": round(pct(results["render"], 50), 2),
        "render_p99_us": round(pct(results["render"], 99), 2),
        "rendered_chars": chars,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
