from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops import Settings


def test_defaults() -> None:
    settings = Settings()
    assert settings.port == 8000
    assert settings.host == "127.0.0.1"
    assert settings.data_dir == Path(".llmops")
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_database_url.endswith(".llmops/llmops.db")
    assert [m.name for m in settings.models] == ["smollm2-135m-instruct", "all-minilm-l6-v2"]
    assert [a.name for a in settings.rag_apps] == ["handbook-rag"]


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_PORT", "8123")
    monkeypatch.setenv("LLMOPS_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("LLMOPS_KNOWLEDGE__CHUNKING__SIZE", "128")
    settings = Settings()
    assert settings.port == 8123
    assert settings.resolved_database_url == "postgresql+psycopg://u@h/db"
    assert settings.knowledge.chunking.size == 128


def test_yaml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(
        "port: 9001\n"
        "models:\n"
        "  - name: remote\n"
        "    provider: openai-compatible\n"
        "    model: gpt-x\n"
        "    base_url: http://127.0.0.1:9/v1\n"
        "    input_price_per_mtok: 1.5\n"
        "rag_apps:\n"
        "  - name: docs\n"
        "    model: remote\n"
        "    top_k: 6\n"
    )
    monkeypatch.setenv("LLMOPS_CONFIG", str(config))
    monkeypatch.setenv("LLMOPS_PORT", "9002")  # the environment wins over the file
    settings = Settings()
    assert settings.port == 9002
    assert settings.model("remote") is not None
    assert settings.model("remote").input_price_per_mtok == 1.5
    assert settings.rag_app("docs").top_k == 6


def test_bad_values_are_refused_with_the_field_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_overlap_must_be_smaller_than_chunk() -> None:
    with pytest.raises(ValidationError, match=r"overlap \(64\) must be smaller than size \(64\)"):
        Settings.model_validate({"knowledge": {"chunking": {"size": 64, "overlap": 64}}})


def test_unknown_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text("prot: 80\n")
    monkeypatch.setenv("LLMOPS_CONFIG", str(config))
    with pytest.raises(ValidationError, match="prot"):
        Settings()
