"""Prompts as files: push a folder of YAML files, pull them back, never overwrite a version."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops import Platform
from llmops.evaluation import JUDGE_RUBRICS
from llmops.prompts import pull_prompts, push_prompts

SUPPORT = """\
name: support-answer
description: Answers support questions.
messages:
  - role: system
    content: "You answer in one sentence. Context: {{ context }}"
  - role: user
    content: "{{ question }}"
variables: {context: str, question: str}
params: {temperature: 0.2, max_tokens: 200}
tags: [support]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "prompts"
    target.mkdir()
    (target / "support-answer.yaml").write_text(SUPPORT)
    (target / "greeting.yml").write_text("messages:\n  - {role: user, content: 'Hello {{ name }}'}\n")
    return target


def test_push_creates_versions_and_an_unchanged_push_does_nothing(platform: Platform, folder: Path) -> None:
    first = push_prompts(platform.prompts, folder, author="ci")
    assert sorted(first.created) == [("greeting", 1), ("support-answer", 1)] and first.failed == []
    version = platform.prompts.get_version("support-answer", 1)
    assert version.params == {"temperature": 0.2, "max_tokens": 200} and version.author == "ci"
    assert version.commit_message == "pushed from support-answer.yaml"
    again = push_prompts(platform.prompts, folder, author="ci")
    assert again.created == [] and sorted(again.unchanged) == [("greeting", 1), ("support-answer", 1)]


def test_a_changed_file_becomes_a_new_version_and_the_old_one_stays(platform: Platform, folder: Path) -> None:
    push_prompts(platform.prompts, folder, author="ci")
    (folder / "support-answer.yaml").write_text(SUPPORT.replace("one sentence", "two sentences"))
    report = push_prompts(platform.prompts, folder, author="ci")
    assert report.created == [("support-answer", 2)]
    assert "one sentence" in platform.prompts.get_version("support-answer", 1).messages[0]["content"]
    assert "two sentences" in platform.prompts.get_version("support-answer", 2).messages[0]["content"]


def test_bad_files_are_reported_and_the_rest_pushed(platform: Platform, folder: Path) -> None:
    (folder / "evil.yaml").write_text("messages:\n  - {role: user, content: '{{ cycler.__init__.__globals__ }}'}\n")
    (folder / "typo.yaml").write_text(SUPPORT.replace("params:", "parms:"))
    (folder / "broken.yaml").write_text("messages: [unclosed\n")
    (folder / "list.yaml").write_text("- just\n- a list\n")
    report = push_prompts(platform.prompts, folder, author="ci")
    failed = {Path(path).name: reason for path, reason in report.failed}
    assert set(failed) == {"evil.yaml", "typo.yaml", "broken.yaml", "list.yaml"}
    assert "refused" in failed["evil.yaml"] and "unknown keys ['parms']" in failed["typo.yaml"]
    assert "cannot read YAML" in failed["broken.yaml"] and "must hold a mapping" in failed["list.yaml"]
    assert sorted(report.created) == [("greeting", 1), ("support-answer", 1)]


def test_push_can_move_a_label_and_asks_for_approval_when_protected(platform: Platform, folder: Path) -> None:
    report = push_prompts(platform.prompts, folder, author="ci", label="staging", environment="staging")
    assert sorted(report.labelled) == [("greeting", 1), ("support-answer", 1)]
    platform.prompts.approvals.set_policy("*", "prod", "production", required_approvals=1, by="admin")
    report = push_prompts(platform.prompts, folder, author="ci", label="production", environment="prod")
    assert report.labelled == [] and len(report.approval_requests) == 2
    assert len(platform.prompts.approvals.requests()) == 2


def test_pull_writes_files_that_push_back_as_no_ops(platform: Platform, folder: Path, tmp_path: Path) -> None:
    push_prompts(platform.prompts, folder, author="ci")
    out = tmp_path / "pulled"
    written = pull_prompts(platform.prompts, out)
    judges = {f"{name}.yaml" for name in JUDGE_RUBRICS}  # the evaluation rubrics the platform seeds
    assert {p.name for p in written} == {"greeting.yaml", "support-answer.yaml", "rag-default.yaml", *judges}
    assert "support-answer v1" in (out / "support-answer.yaml").read_text().splitlines()[0]
    report = push_prompts(platform.prompts, out, author="someone-else")
    assert report.created == [] and report.failed == []


def test_push_of_a_missing_folder_is_a_clear_error(platform: Platform, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        push_prompts(platform.prompts, tmp_path / "nope", author="ci")
