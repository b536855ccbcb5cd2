"""Settings: environment variables ``LLMOPS_*``, an optional ``llmops.yaml``, and defaults.

Precedence, highest first: keyword arguments, environment variables, the YAML file, defaults. Nested fields use a
double underscore in the environment: ``LLMOPS_RAG__TOP_K=6``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = ["ModelConfig", "RagConfig", "Settings"]


class ModelConfig(BaseModel):
    """A model the gateway serves, under the name clients use.

    ``provider`` is ``local`` (the bundled llama.cpp model) or ``openai-compatible`` (any ``/v1/chat/completions``
    server at ``base_url``). Prices are US dollars per million tokens.
    """

    name: str
    provider: str = "local"
    model: str = ""
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, description="name of the environment variable holding the API key")
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    context_window: int = 2048


class RagConfig(BaseModel):
    """A RAG application: the name clients use as a model, and how it retrieves and answers."""

    name: str = "handbook-rag"
    model: str = "smollm2-135m-instruct"
    prompt: str = "rag-default"
    prompt_label: str = "production"
    environment: str | None = Field(default=None, description="whose labels to follow; the platform's by default")
    top_k: int = Field(default=4, ge=1, le=50)
    # On the sample handbook with MiniLM, 100 real questions scored 0.25 to 0.81 against their best chunk and ten
    # unrelated ones (capital of France, a poem, a stock price) 0.04 to 0.15.
    min_similarity: float = Field(default=0.2, ge=-1.0, le=1.0)
    # The bundled 135M model answers best from one or two short chunks; larger models want a larger budget.
    context_token_budget: int = Field(default=320, ge=32)
    max_answer_tokens: int = Field(default=120, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)


def _default_models() -> list[ModelConfig]:
    return [ModelConfig(name="smollm2-135m-instruct", provider="local", model="SmolLM2-135M-Instruct.Q4_1")]


class Settings(BaseSettings):
    """Everything the platform is built from. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_",
        env_nested_delimiter="__",
        yaml_file="llmops.yaml",
        extra="forbid",
    )

    data_dir: Path = Path(".llmops")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to SQLite at DATA_DIR/llmops.db"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    # Decoding is memory-bound and slows down when its threads compete with the server for cores; prompt
    # processing is compute-bound and scales with threads (206 tokens: 1.44 s on 1 thread, 0.72 s on 2, here).
    llm_threads: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2), ge=1)
    llm_batch_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    llm_model_path: Path | None = Field(default=None, description="a GGUF file; defaults to the bundled SmolLM2")
    embedding_threads: int = Field(default=1, ge=1)
    chunk_tokens: int = Field(default=200, ge=16, le=256)
    chunk_overlap_tokens: int = Field(default=32, ge=0)
    environment: str = Field(default="dev", description="the environment this process serves (its prompt labels)")
    environments: list[str] = Field(default_factory=lambda: ["dev", "staging", "prod"], min_length=1)
    prompt_cache_ttl_s: float = Field(default=10.0, ge=0.0)
    models: list[ModelConfig] = Field(default_factory=_default_models)
    rag_apps: list[RagConfig] = Field(default_factory=lambda: [RagConfig()])

    @field_validator("chunk_overlap_tokens")
    @classmethod
    def _overlap_below_size(cls, value: int, info: Any) -> int:
        size = info.data.get("chunk_tokens", 200)
        if value >= size:
            raise ValueError(f"chunk_overlap_tokens ({value}) must be smaller than chunk_tokens ({size})")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_path = os.environ.get("LLMOPS_CONFIG", "llmops.yaml")
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'llmops.db').resolve()}"

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def rag_app(self, name: str) -> RagConfig | None:
        return next((a for a in self.rag_apps if a.name == name), None)
