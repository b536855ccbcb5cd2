"""Latency of the default guardrail checks on ~1 KB texts, next to Presidio's analyzer on the same texts.

    .venv/bin/python bench/guardrails_latency.py [--requests 200] [--no-presidio]

One request = the platform's default guardrail policy (``llmops.guardrails.default_policy``, run by the same
``GuardrailEngine`` and rail thread pool the server uses) on a ~1 KB user message (size, prompt injection), its
~1.5 KB retrieved context (indirect injection) and a ~1 KB answer (PII leakage against the message, insults,
system-prompt overlap, grounding with the MiniLM tier). The detectors are also timed one by one.
Inputs are consecutive texts of ``pii/presidio_synth_v2_dev.json`` joined to ~1 KB (so the PII detectors have work
to do). Answers are built from the sample handbook: sentences of a section, reordered, with one figure changed in
every third answer, so the grounding checker meets supported, paraphrase-free and unsupported claims; the embedding
tier runs only for claims whose word overlap is inconclusive. Every request uses different texts.

Also timed: grounding alone on abstractive answers (HaluEval answers cut to ~1 KB, their query as context), where
most claims go to the MiniLM tier, its slow path; the same checks with the spaCy NER tier on (names, places,
organisations) in PII and leakage; and Presidio's ``AnalyzerEngine.analyze`` (spaCy ``en_core_web_sm`` 3.8, its own
virtualenv) on the same input messages and answers, one call per text. Each figure is a percentile over single calls
timed with ``perf_counter``. The machine is shared: run it when nothing else is busy, and expect run-to-run spread.

The table is printed first; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops.guardrails import (
    GroundingChecker,
    GuardrailEngine,
    GuardrailPolicy,
    InjectionDetector,
    InsultDetector,
    PiiDetector,
    PiiLeakageDetector,
    RailModels,
    SpacyNerDetector,
    default_policy,
)
from llmops.knowledge import MiniLMEmbedder

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from guardrails_accuracy import DATASETS  # noqa: E402 - the bench folder is not a package

PII_FILE = DATASETS / "pii" / "presidio_synth_v2_dev.json"
HANDBOOK = HERE.parent / "samples" / "handbook"
TARGET_CHARS = 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def input_messages(count: int) -> list[str]:
    texts = [row["full_text"] for row in json.loads(PII_FILE.read_text(encoding="utf-8"))]
    messages: list[str] = []
    position = 0
    while len(messages) < count:
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < TARGET_CHARS:
            parts.append(texts[position % len(texts)])
            position += 1
        messages.append(" ".join(parts)[: TARGET_CHARS + 200])
    return messages


def handbook_sections() -> list[str]:
    sections: list[str] = []
    for path in sorted(HANDBOOK.glob("*.md")) + sorted(HANDBOOK.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        # Markdown sections, or blank-line paragraphs grouped to ~1.5 KB.
        blocks = [b.strip() for b in re.split(r"\n(?=#)|\n\s*\n", text) if len(b.strip()) > 40]
        current = ""
        for block in blocks:
            current = f"{current}\n\n{block}" if current else block
            if len(current) >= 1500:
                sections.append(current)
                current = ""
        if current:
            sections.append(current)
    return sections


def answers_with_context(count: int, seed: int = 7) -> list[tuple[str, str]]:
    """(answer, context) pairs: ~1 KB answers made of the context's own sentences, some with a figure changed."""
    from llmops.guardrails._text import split_sentences

    rng = random.Random(seed)
    sections = handbook_sections()
    pairs: list[tuple[str, str]] = []
    for index in range(count):
        context = " ".join(sections[index % len(sections)] for _ in range(1))
        sentences = [context[s:e] for s, e in split_sentences(context) if len(context[s:e]) > 30]
        rng.shuffle(sentences)
        answer_parts: list[str] = []
        for sentence in sentences * 3:
            if sum(len(p) + 1 for p in answer_parts) >= TARGET_CHARS:
                break
            answer_parts.append(sentence.replace("\n", " "))
        answer = " ".join(answer_parts)
        if index % 3 == 0:  # a changed figure: the grounding checker must catch it
            answer = re.sub(r"\b(\d+)\b", lambda m: str(int(m.group(1)) + 7), answer, count=1)
        pairs.append((answer, context))
    return pairs


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Milliseconds one call of ``fn(*args)`` took."""
    started = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - started) * 1000


def abstractive_answers(count: int) -> list[tuple[str, str]]:
    """(answer, context) pairs whose claims are mostly paraphrase or new: HaluEval answers cut to ~1 KB, with their
    query as context. The grounding checker sends many claims to the MiniLM tier here: its slow path."""
    path = PII_FILE.parent.parent / "hallucination" / "halueval_general_dev.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    long_rows = [row for row in rows if len(row["chatgpt_response"]) >= 600]
    return [(row["chatgpt_response"][:TARGET_CHARS], row["user_query"]) for row in long_rows[:count]]


SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the user's question in one sentence using only the context below, and cite "
    "the source number like [1]."
)


def policy_request(engine: GuardrailEngine, message: str, answer: str, context: str) -> None:
    """What the default policy runs on one RAG request: input, retrieved context, output."""
    engine.check_input(message)
    engine.check_context([context])
    engine.check_output(answer, supplied=[message], context=[context], system_prompt=SYSTEM_PROMPT)


def with_ner(policy: GuardrailPolicy) -> GuardrailPolicy:
    """The policy with names, places and organisations found by spaCy in the input and the answer."""
    data = policy.model_dump(exclude_none=True)
    data["input"].insert(1, {"rail": "pii", "action": "redact", "ner": True})
    for rail in data["output"]:
        if rail["rail"] == "pii_leakage":
            rail["ner"] = True
    return GuardrailPolicy.parse(data)


def run(requests: int, use_presidio: bool) -> dict[str, Any]:
    messages = input_messages(requests)
    pairs = answers_with_context(requests)
    pii = PiiDetector()
    injection = InjectionDetector()
    insults = InsultDetector()
    embedder = MiniLMEmbedder()
    grounding = GroundingChecker(embedder)
    pool = concurrent.futures.ThreadPoolExecutor(2)  # as the platform's default (guardrails.workers)
    models = RailModels(embedder)
    engine = GuardrailEngine(default_policy(), models=models, executor=pool)
    ner_engine = (
        GuardrailEngine(with_ner(default_policy()), models=models, executor=pool)
        if SpacyNerDetector.is_available()
        else None
    )
    leakage = PiiLeakageDetector(pii)

    stages: dict[str, list[float]] = {name: [] for name in
                                      ("input pii", "input injection", "output pii leakage", "output insults",
                                       "output grounding", "input+output (default)", "input+output with NER",
                                       "grounding, abstractive answers")}  # fmt: skip
    grounding_embedded = 0
    for warmup in range(5):
        message, (answer, context) = messages[warmup], pairs[warmup]
        pii.detect(message), injection.detect(message), leakage.detect(answer, [message])
        insults.detect(answer), grounding.check(answer, [context])
        policy_request(engine, message, answer, context)
        if ner_engine:
            policy_request(ner_engine, message, answer, context)
    for message, (answer, context) in zip(messages, pairs, strict=True):
        steps = {
            "input pii": timed(pii.detect, message),
            "input injection": timed(injection.detect, message),
            "output pii leakage": timed(leakage.detect, answer, [message]),
            "output insults": timed(insults.detect, answer),
        }
        started = time.perf_counter()
        report = grounding.check(answer, [context])
        steps["output grounding"] = (time.perf_counter() - started) * 1000
        grounding_embedded += sum(1 for claim in report.claims if claim.similarity is not None)
        for name, ms in steps.items():
            stages[name].append(ms)
        stages["input+output (default)"].append(timed(policy_request, engine, message, answer, context))
        if ner_engine:
            stages["input+output with NER"].append(timed(policy_request, ner_engine, message, answer, context))

    # The slow path of grounding: paraphrased or new claims, each embedded with MiniLM (with its closest sentences).
    semantic_ms: list[float] = []
    semantic_embedded = 0
    for answer, context in abstractive_answers(min(requests, 100)):
        started = time.perf_counter()
        report = grounding.check(answer, [context])
        semantic_ms.append((time.perf_counter() - started) * 1000)
        semantic_embedded += sum(1 for claim in report.claims if claim.similarity is not None)
    stages["grounding, abstractive answers"] = semantic_ms

    figures: dict[str, Any] = {
        "requests": requests,
        "grounding_abstractive_claims_embedded_per_answer": round(semantic_embedded / max(1, len(semantic_ms)), 2),
        "input_chars_mean": round(statistics.mean(len(m) for m in messages)),
        "answer_chars_mean": round(statistics.mean(len(a) for a, _ in pairs)),
        "context_chars_mean": round(statistics.mean(len(c) for _, c in pairs)),
        "grounding_claims_embedded_per_request": round(grounding_embedded / requests, 2),
    }
    print(
        f"Guardrail latency over {requests} requests: input ~{figures['input_chars_mean']} chars, answer "
        f"~{figures['answer_chars_mean']} chars, context ~{figures['context_chars_mean']} chars; "
        f"{figures['grounding_claims_embedded_per_request']} claims per answer went to the MiniLM tier\n"
    )
    print(f"{'check':<32}{'p50 ms':>10}{'p99 ms':>10}")
    for name, values in stages.items():
        if values:
            print(f"{name:<32}{percentile(values, 50):>10.2f}{percentile(values, 99):>10.2f}")
    default = stages["input+output (default)"]
    figures.update({"p50_ms": round(percentile(default, 50), 3), "p99_ms": round(percentile(default, 99), 3)})
    for name, values in stages.items():
        if values and name != "input+output (default)":
            key = re.sub(r"\W+", "_", name).strip("_")
            figures[f"{key}_p50_ms"] = round(percentile(values, 50), 3)
            figures[f"{key}_p99_ms"] = round(percentile(values, 99), 3)
    if use_presidio:
        from guardrails_presidio import run_presidio

        run_ = run_presidio(messages + [a for a, _ in pairs])
        inputs_ms, answers_ms = run_.ms[: len(messages)], run_.ms[len(messages) :]
        print(f"{'presidio analyze, input':<32}{percentile(inputs_ms, 50):>10.2f}{percentile(inputs_ms, 99):>10.2f}")
        print(f"{'presidio analyze, answer':<32}{percentile(answers_ms, 50):>10.2f}{percentile(answers_ms, 99):>10.2f}")
        print(f"(presidio {run_.versions})")
        figures.update({
            "presidio_p50_ms": round(percentile(inputs_ms, 50), 3),
            "presidio_p99_ms": round(percentile(inputs_ms, 99), 3),
            "presidio_answer_p50_ms": round(percentile(answers_ms, 50), 3),
            "presidio_spacy_model": run_.versions.get("spacy model"),
        })  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--no-presidio", action="store_true")
    args = parser.parse_args()
    figures = run(args.requests, not args.no_presidio)
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
