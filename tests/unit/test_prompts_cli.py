"""The `llmops prompts` and `llmops roles` commands, run in process with typer's runner on a real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmops.cli import app

SUPPORT = """\
messages:
  - {role: system, content: "Answer in one sentence. Context: {{ context }}"}
  - {role: user, content: "{{ question }}"}
variables: {context: str, question: str}
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLMOPS_USER", "ana")
    return CliRunner()


def run(cli: CliRunner, *args: str, user: str | None = None, code: int = 0) -> str:
    env = {"LLMOPS_USER": user} if user else None
    result = cli.invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.output


def test_push_label_diff_history_and_rollback(cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "support.yaml").write_text(SUPPORT)
    assert "created support v1" in run(cli, "prompts", "push", str(folder))
    (folder / "support.yaml").write_text(SUPPORT.replace("one sentence", "two sentences"))
    assert "created support v2" in run(cli, "prompts", "push", str(folder))
    assert "unchanged support v2" in run(cli, "prompts", "push", str(folder))
    run(cli, "prompts", "label", "support", "production", "1", "--env", "prod", "--reason", "launch")
    run(cli, "prompts", "label", "support", "production", "2", "--env", "prod")
    assert "two sentences" in run(cli, "prompts", "show", "support", "--env", "prod")
    diff = run(cli, "prompts", "diff", "support", "1", "2")
    assert "-" in diff and "+" in diff and "two sentences" in diff
    assert "rolled back to v1" in run(cli, "prompts", "rollback", "support", "--env", "prod", user="ops")
    history = run(cli, "prompts", "history", "support")
    assert "rollback" in history and "ops" in history and "launch" in history
    versions = run(cli, "prompts", "versions", "support")
    assert "prod/production" in versions
    assert "support" in run(cli, "prompts", "list")
    out = tmp_path / "pulled"
    assert "support.yaml" in run(cli, "prompts", "pull", str(out))


def test_protected_label_flow(cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "support.yaml").write_text(SUPPORT)
    run(cli, "prompts", "push", str(folder))
    run(cli, "roles", "grant", "olga", "approver", user="root")
    run(cli, "roles", "grant", "ana", "approver", user="root")
    assert "olga" in run(cli, "roles", "list")
    assert "1 approval(s)" in run(cli, "prompts", "policy", "prod", "production", "--approvals", "1")
    refused = run(cli, "prompts", "label", "support", "production", "1", "--env", "prod", code=1)
    assert "needs approval" in refused
    assert "change request 1" in run(cli, "prompts", "request", "support", "production", "1", "--env", "prod")
    assert "pending" in run(cli, "prompts", "requests")
    assert "ana is the author" in run(cli, "prompts", "approve", "1", user="ana", code=1)
    assert "applied" in run(cli, "prompts", "approve", "1", user="olga")
    assert "v1" in run(cli, "prompts", "show", "support", "--env", "prod")


def test_stage_check_and_experiment(cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "support.yaml").write_text(SUPPORT)
    run(cli, "prompts", "push", str(folder))
    (folder / "support.yaml").write_text(SUPPORT.replace("one sentence", "a few words"))
    run(cli, "prompts", "push", str(folder))
    run(cli, "prompts", "label", "support", "production", "1")
    assert "is now testing" in run(cli, "prompts", "stage", "support", "2", "testing")
    assert "can move to testing, not to deprecated" in run(
        cli, "prompts", "stage", "support", "1", "deprecated", code=1
    )
    assert "eval-gate passed" in run(cli, "prompts", "check", "support", "2", "eval-gate", "--passed")
    started = run(cli, "prompts", "experiment", "start", "support", "--variant", "1=0.9", "--variant", "2=0.1")
    experiment_id = started.split()[1]
    shown = run(cli, "prompts", "experiment", "show", experiment_id)
    assert "running" in shown and "insufficient data" in shown
    assert "stopped" in run(cli, "prompts", "experiment", "stop", experiment_id)
    assert "VERSION=WEIGHT" in run(cli, "prompts", "experiment", "start", "support", "--variant", "x", code=2)


def test_errors_are_one_clear_line(cli: CliRunner) -> None:
    assert "no prompt named 'nope'" in run(cli, "prompts", "versions", "nope", code=1)
    assert "unknown role 'boss'" in run(cli, "roles", "grant", "x", "boss", code=1)
