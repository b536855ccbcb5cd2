"""Datasets: examples from JSONL, CSV and YAML files (malformed ones refused whole, with the place and the problem),
immutable versions on SQLite and PostgreSQL, the review queue, and examples from production traces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from llmops import Platform
from llmops.evaluation import (
    DatasetFileError,
    DatasetNotFoundError,
    EvalConfigError,
    Example,
    RelevantPassage,
    examples_from_traces,
    load_eval_config,
    load_examples,
    synthesize_examples,
)
from llmops.testing import ScriptedProvider

from ..conftest import LOCAL_MODEL, ROOT, SAMPLES


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_examples_with_every_field_and_the_other_tools_names(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "golden.jsonl",
        json.dumps(
            {
                "id": "q1",
                "question": "How many PTO days?",
                "answer": "15 days",
                "facts": ["15 days"],
                "sources": ["pto.md", {"source": "faq.md", "contains": "fifteen"}],
                "tags": ["pto"],
                "assertions": [{"type": "contains", "value": "15"}],
                "metadata": {"human_score": 4},
            }
        )
        + "\n\n"
        + json.dumps({"input": "Capital of Peru?", "answerable": False})
        + "\n",
    )
    first, second = load_examples(path)
    assert first.id == "q1" and first.input == "How many PTO days?" and first.expected == "15 days"
    assert first.sources == (RelevantPassage("pto.md"), RelevantPassage("faq.md", "fifteen"))
    assert first.assertions == ({"type": "contains", "value": "15"},) and first.metadata == {"human_score": 4}
    assert second.id.startswith("ex_") and not second.answerable
    # The derived id is the content's: the same example gets the same id in any file.
    assert (
        load_examples(_write(tmp_path / "again.jsonl", json.dumps({"input": "Capital of Peru?", "answerable": False})))[
            0
        ].id
        == second.id
    )


def test_csv_and_yaml_examples(tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "golden.csv",
        'input,expected,facts,sources,tags,answerable,owner\n"How long, in chars, are passwords?",14,14 characters|'
        "at least,security.html,security|passwords,true,ana\nWho won in 1998?,,,,off-topic,false,\n",
    )
    a, b = load_examples(csv_path)
    assert a.input == "How long, in chars, are passwords?" and a.facts == ("14 characters", "at least")
    assert a.sources == (RelevantPassage("security.html"),) and a.tags == ("security", "passwords")
    assert a.metadata == {"owner": "ana"} and b.answerable is False and b.expected is None
    yaml_path = _write(tmp_path / "golden.yaml", "examples:\n  - input: How many PTO days?\n    facts: [15 days]\n")
    assert load_examples(yaml_path)[0].facts == ("15 days",)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"input": "ok"}\n{"input": "cut', "bad.jsonl:2: not valid JSON"),
        ("bad.jsonl", '{"question": ""}\n', "input: String should have at least 1 character"),
        ("bad.jsonl", '{"input": "a", "expect": "typo"}\n', "expect: Extra inputs are not permitted"),
        ("bad.jsonl", '{"input": "a", "id": "x"}\n{"input": "b", "id": "x"}\n', "duplicate example 'x'"),
        ("bad.jsonl", '["input"]\n', "an example must be an object"),
        ("bad.jsonl", '{"input": "a", "assertions": [{"value": 1}]}\n', "each assertion needs a 'type'"),
        ("bad.jsonl", "\n\n", "holds no examples"),
        ("bad.csv", "prompt,answer\nhi,there\n", "must name an 'input'"),
        ("bad.csv", "input,answerable\nhi,maybe\n", "answerable must be true or false"),
        ("bad.csv", "input\nhi,extra\n", "more cells than header columns"),
        ("bad.yaml", "examples: [unclosed\n", "not valid YAML"),
        ("bad.yaml", "just a string\n", "expected a YAML list"),
        ("bad.txt", "input\n", "unknown dataset format .txt"),
        ("bad.jsonl", "\xff", "as UTF-8"),
    ],
)
def test_malformed_files_are_refused_with_the_place_and_the_problem(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if text == "\xff" else text.encode())
    with pytest.raises(DatasetFileError, match=None) as raised:
        load_examples(path)
    assert message in str(raised.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError, match="cannot read the dataset"):
        load_examples(tmp_path / "absent.jsonl")


def _examples(*inputs: str) -> list[Example]:
    return [Example(id=f"e{n}", input=text) for n, text in enumerate(inputs)]


def test_versions_are_immutable_and_identical_content_is_a_no_op(platform: Platform) -> None:
    datasets = platform.datasets
    v1 = datasets.save("golden", _examples("a", "b"), author="ana", message="first")
    assert (v1.version, len(v1.examples)) == (1, 2)
    assert datasets.save("golden", _examples("a", "b"), author="bo").version == 1
    v2 = datasets.save("golden", [*_examples("a", "B"), Example(id="e9", input="c")], author="bo")
    assert v2.version == 2
    assert [e.input for e in datasets.get("golden", 1).examples] == ["a", "b"]  # version 1 is untouched
    assert datasets.get("golden").version == 2
    assert datasets.diff("golden", 1, 2) == {"added": ["e9"], "removed": [], "changed": ["e1"]}
    assert [v["version"] for v in datasets.versions("golden")] == [1, 2]
    assert datasets.list_datasets()[0] | {"description": ""} == {
        "name": "golden", "description": "", "latest_version": 2, "pending_drafts": 0,
    }  # fmt: skip
    with pytest.raises(DatasetNotFoundError, match="no version 7 of dataset 'golden'"):
        datasets.get("golden", 7)
    with pytest.raises(ValueError, match="duplicate example ids"):
        datasets.save("golden", [Example(id="x", input="a"), Example(id="x", input="b")], author="ana")
    with pytest.raises(ValueError, match="dataset name"):
        datasets.save("../etc", _examples("a"), author="ana")


def test_drafts_enter_a_version_only_when_accepted(platform: Platform) -> None:
    datasets = platform.datasets
    datasets.save("golden", _examples("a"), author="ana")
    ids = datasets.add_drafts("golden", [Example(id="d1", input="b"), Example(id="d2", input="c")], origin="synthetic")
    assert [d.example.id for d in datasets.drafts("golden")] == ["d1", "d2"]
    assert datasets.get("golden").version == 1  # drafts are not in any version yet
    edited = Example(id="d1", input="b, reworded", expected="B")
    version = datasets.review("golden", accept=[ids[0]], reject=[ids[1]], by="bo", edits={ids[0]: edited})
    assert version is not None and version.version == 2
    assert [e.input for e in version.examples] == ["a", "b, reworded"]
    assert datasets.drafts("golden") == []
    assert {d.status for d in datasets.drafts("golden", status=None)} == {"accepted", "rejected"}
    with pytest.raises(ValueError, match="already reviewed"):
        datasets.review("golden", accept=[ids[0]], by="bo")
    with pytest.raises(DatasetNotFoundError, match="no drafts"):
        datasets.review("golden", accept=[999], by="bo")
    assert datasets.review("golden", reject=[], by="bo") is None


def test_examples_from_traces_hold_the_redacted_question_and_the_production_answer(platform: Platform) -> None:
    platform.knowledge.ingest(SAMPLES)
    rag = platform.rag()
    asyncio.run(rag.ask("How many PTO days do new employees get?"))
    asyncio.run(rag.ask("My email is ana@example.com: how many PTO days do new employees get?"))
    asyncio.run(rag.ask("What is the expense policy?"))
    found = platform.traces.select_answers(topic="pto days")
    assert len(found) == 2
    examples = examples_from_traces(found)
    assert {e.input for e in examples} == {
        "How many PTO days do new employees get?",
        "My email is <EMAIL_ADDRESS>: how many PTO days do new employees get?",
    }
    assert all(e.metadata["production_answer"] and e.metadata["trace_id"] for e in examples)
    assert "ana@example.com" not in json.dumps([e.to_dict() for e in examples])
    assert platform.traces.select_answers(app="other-app") == []
    assert len(platform.traces.select_answers(limit=1)) == 1


def test_the_sample_gate_config_loads_and_finds_its_dataset() -> None:
    config = load_eval_config(ROOT / "samples" / "eval" / "gate.yaml")
    assert config.dataset.file == ROOT / "samples" / "eval" / "handbook-golden.jsonl"
    assert config.dataset.file.is_file() and len(load_examples(config.dataset.file)) == 35
    assert [m.name for m in config.metrics][:2] == ["correctness", "fact_coverage"]
    assert config.metrics[0].threshold == 0.3 and config.metrics[2].params == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n", "dataset: Field required"),
        ("name: x\ndataset: {name: d}\ntarget: {}\nmetrics: [m]\n", "a target needs an app"),
        ("name: x\ndataset: {name: d}\ntarget: {model: m, retrieval: {top_k: 3}}\nmetrics: [m]\n", "RAG app target"),
        ("name: x\ndataset: {name: d}\ntarget: {app: a}\nmetrics: []\n", "metrics: List should have at least 1"),
        ("name: x\ndataset: {name: d}\ntarget: {app: a}\nmetrics: [m, m]\n", "metrics listed twice"),
        ("name: x\ndataset: {}\ntarget: {app: a}\nmetrics: [m]\n", "a dataset needs a name or a file"),
        ("name: x\ndataset: {name: d}\ntarget: {app: a}\nmetrics: [m]\nbaseline: {}\n", "exactly one of"),
        ("name: x\ndataset: {name: d}\ntarget: {app: a}\nmetrics: [m]\nconcurrency: 0\n", "concurrency"),
        ("name: x\ndataset: {name: d}\ntarget: {app: a}\nmetrics: [m]\ngate: {alpha: 2}\n", "gate.alpha"),
        ("[1, 2]\n", "must be a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_configs_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "eval.yaml", text)
    with pytest.raises(EvalConfigError) as raised:
        load_eval_config(path)
    assert message in str(raised.value)


def test_synthetic_examples_come_from_chunks_and_unusable_outputs_are_dropped(
    platform: Platform, scripted: ScriptedProvider
) -> None:
    platform.knowledge.ingest(SAMPLES)
    chunks = platform.knowledge.sample_chunks(4, seed=1)
    assert len(chunks) == 4 and chunks == platform.knowledge.sample_chunks(4, seed=1)  # reproducible
    first_words = chunks[0].text.split()[:6]
    replies = [
        json.dumps({"question": "What does the passage say first?", "answer": "x", "evidence": " ".join(first_words)}),
        "I cannot write JSON today.",
        json.dumps({"question": "not a question", "answer": "y", "evidence": "z"}),
        'Sure! {"question": "Which policy applies here?", "answer": "this one", "evidence": "not in the chunk"}',
    ]
    scripted._replies = lambda request: replies[[c.text in request.messages[-1]["content"] for c in chunks].index(True)]  # type: ignore[assignment]
    report = asyncio.run(synthesize_examples(chunks, platform.gateway, LOCAL_MODEL))
    assert report.attempted == 4 and report.dropped == {"no JSON object": 1, "not a question": 1}
    first, last = report.examples
    assert first.input == "What does the passage say first?" and first.sources[0].contains == " ".join(first_words)
    assert last.sources[0].contains is None  # evidence the chunk does not hold is not kept as a snippet
    assert first.metadata["chunk_id"] == chunks[0].chunk_id and "synthetic" in first.tags
    assert scripted.requests[0].response_format is not None  # JSON-schema output where the provider supports it
    ids = platform.datasets.add_drafts("synth", report.examples, origin="synthetic")
    assert len(platform.datasets.drafts("synth")) == 2 and len(ids) == 2
