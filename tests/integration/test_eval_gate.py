"""The CI gate end to end, through the real `llmops` CLI, the bundled models and SQLite: a golden set over the
sample handbook, a deliberately worse prompt version flagged as a significant regression (exit 1), and the same
configuration twice passing (exit 0, answered from the cache)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ..conftest import ROOT, SAMPLES
from .conftest import LLMOPS, clean_env

GOLDEN = ROOT / "samples" / "eval" / "handbook-golden.jsonl"
# 70 answers from the bundled model on 2 cores: minutes, not the suite's default per-test limit.
pytestmark = pytest.mark.timeout(1200)

# The worse prompt: the same instructions without the sources. The model answers from what it learned in training,
# which for these questions is nothing.
WORSE_PROMPT = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer the user's question in one sentence."},
        {"role": "user", "content": "{{ question }}"},
    ],
    "variables": {"question": "str", "sources": "list"},
}


def _llmops(data_dir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMOPS, *args], env=clean_env(data_dir), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval-gate")
    data_dir = root / "data"
    ingest = _llmops(data_dir, "ingest", str(SAMPLES))
    assert ingest.returncode == 0, ingest.stderr
    prompts = root / "prompts"
    prompts.mkdir()
    (prompts / "rag-default.yaml").write_text(yaml.safe_dump({**WORSE_PROMPT, "commit_message": "no sources"}))
    saved = _llmops(data_dir, "prompts", "push", str(prompts))
    assert saved.returncode == 0 and "rag-default v2" in saved.stdout, saved.stdout + saved.stderr
    pushed = _llmops(data_dir, "eval", "dataset", "push", "handbook-golden", str(GOLDEN))
    assert pushed.returncode == 0 and "version 1: 35 examples" in pushed.stdout, pushed.stdout + pushed.stderr
    return root


def _config(root: Path, name: str, candidate_version: int, baseline_version: int) -> Path:
    config = {
        "name": name,
        "dataset": {"name": "handbook-golden"},
        "target": {"app": "handbook-rag", "prompt_version": candidate_version, "max_answer_tokens": 40},
        "metrics": [
            {"name": "correctness", "threshold": 0.1},
            {"name": "fact_coverage", "threshold": 0.05},
            "faithfulness",
            "refusal_correctness",
            "recall_at_k",
        ],
        "baseline": {"target": {"prompt_version": baseline_version}},
        "gate": {"alpha": 0.05, "max_error_rate": 0.0},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_worse_prompt_is_a_significant_regression_and_fails_the_gate(workspace: Path) -> None:
    data_dir = workspace / "data"
    config = _config(workspace, "worse-prompt", candidate_version=2, baseline_version=1)
    reports = workspace / "reports-worse"
    result = _llmops(data_dir, "eval", "run", str(config), "--gate", "--json", "--report-dir", str(reports))
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert not verdict["passed"]
    by_metric = {m["metric"]: m for m in verdict["comparison"]}
    # Without its sources the model states other figures: correctness (similarity to the reference and key-fact
    # coverage, per example) falls on nearly every question, which the paired test calls significant.
    correctness = by_metric["correctness"]
    assert correctness["regressed"] and correctness["p_value"] < 0.05 and correctness["ci"][1] < 0, correctness
    assert any(f.startswith("correctness: regressed") for f in verdict["failures"]), verdict["failures"]
    assert by_metric["fact_coverage"]["difference"] < 0
    # Retrieval does not depend on the prompt: the same chunks, no difference, no flag.
    assert by_metric["recall_at_k"]["difference"] == 0 and not by_metric["recall_at_k"]["significant"]
    summary = (reports / "summary.md").read_text()
    assert "FAIL" in summary and "correctness" in summary
    html = (reports / "report.html").read_text()
    assert "<svg" in html and "<script" not in html


def test_the_same_configuration_twice_passes_from_the_cache(workspace: Path) -> None:
    data_dir = workspace / "data"
    config = _config(workspace, "same-prompt", candidate_version=1, baseline_version=1)
    result = _llmops(data_dir, "eval", "run", str(config), "--gate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["passed"] and verdict["failures"] == []
    assert all(not m["significant"] and m["difference"] == 0 for m in verdict["comparison"])
    # The baseline is the candidate's configuration: every one of its answers came from the cache.
    shown = _llmops(data_dir, "eval", "show", verdict["baseline"], "--json")
    items = json.loads(shown.stdout)["items"]
    assert len(items) == 35 and all(i["cached"] and i["trace_id"] for i in items)
