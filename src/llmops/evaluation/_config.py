"""The evaluation config file (``llmops eval run CONFIG.yaml``): what to run, on which data, scored how, gated how.

.. code-block:: yaml

    name: handbook-answers
    dataset: {name: handbook-golden}            # or {name: ..., version: 3}, or {file: golden.jsonl}
    target:                                     # a RAG app, with overrides...
      app: handbook-rag
      prompt_version: 2
      retrieval: {mode: hybrid, top_k: 4}
      guardrail_policy: none
    # target: {model: smollm2-135m-instruct, prompt: my-prompt}   # ...or a model with an optional prompt
    metrics:
      - {name: fact_coverage, threshold: 0.5}
      - {name: faithfulness, threshold: 0.6}
      - refusal_correctness
      - {name: judge, rubric: judge-correctness, model: gpt-4o-mini}
    baseline: {experiment: exp_1a2b}           # or {name: main}, or {target: {prompt_version: 1}}
    gate: {alpha: 0.05, max_error_rate: 0.0}
    concurrency: 4
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "BaselineSpec",
    "DatasetRef",
    "EvalConfig",
    "EvalConfigError",
    "GateSpec",
    "MetricSpec",
    "RetrievalOverrides",
    "TargetSpec",
    "load_eval_config",
]


class EvalConfigError(ValueError):
    """The config file is malformed; the message names the field and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetRef(_Strict):
    """A stored dataset (``name``, newest version unless ``version``), or a ``file`` saved as a dataset version
    first (named ``name`` or after the file), so every experiment points at an immutable version."""

    name: str | None = None
    version: int | None = Field(default=None, ge=1)
    file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> DatasetRef:
        if self.name is None and self.file is None:
            raise ValueError("a dataset needs a name or a file")
        if self.file is not None and self.version is not None:
            raise ValueError("a dataset file makes its own version; give either file or version")
        return self


class RetrievalOverrides(_Strict):
    mode: Literal["dense", "keyword", "hybrid"] | None = None
    top_k: int | None = Field(default=None, ge=1, le=50)
    min_similarity: float | None = Field(default=None, ge=-1.0, le=1.0)
    snapshot: int | None = None
    filter: dict[str, Any] | None = None
    mmr_lambda: float | None = Field(default=None, ge=0.0, le=1.0)
    reranker: str | None = None
    context_token_budget: int | None = Field(default=None, ge=32)


class TargetSpec(_Strict):
    """What answers: a RAG ``app`` (its settings, with these overrides) or a gateway ``model`` (with an optional
    prompt whose variables ``input``/``question`` receive the example's input)."""

    app: str | None = None
    model: str | None = None
    prompt: str | None = None
    prompt_version: int | None = Field(default=None, ge=1)
    prompt_label: str | None = None
    retrieval: RetrievalOverrides = Field(default_factory=RetrievalOverrides)
    guardrail_policy: str | None = Field(default=None, description="name, name@version, or none")
    max_answer_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _what(self) -> TargetSpec:
        if self.app is None and self.model is None:
            raise ValueError("a target needs an app (a RAG app) or a model (a gateway model)")
        if self.app is None and self.retrieval != RetrievalOverrides():
            raise ValueError("retrieval settings apply to a RAG app target only")
        return self

    def merged(self, overrides: dict[str, Any]) -> TargetSpec:
        """This target with ``overrides`` applied (nested for retrieval): how a baseline differs from the candidate."""
        data = self.model_dump(exclude_unset=True)
        for key, value in overrides.items():
            if key == "retrieval" and isinstance(value, dict):
                data["retrieval"] = {**data.get("retrieval", {}), **value}
            else:
                data[key] = value
        return TargetSpec.model_validate(data)


class MetricSpec(BaseModel):
    """A metric by name, its parameters (any other keys), and the gate's threshold on its mean. ``as`` names the
    scores when a metric is listed twice (two judges with different rubrics)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str
    threshold: float | None = None
    as_name: str | None = Field(default=None, alias="as", min_length=1, max_length=100)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BaselineSpec(_Strict):
    """What the candidate is compared with: an experiment id, the newest finished experiment of a config ``name``
    on the same dataset, or the candidate target with ``target`` overrides (run, or reused from the cache)."""

    experiment: str | None = None
    name: str | None = None
    target: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> BaselineSpec:
        if sum(x is not None for x in (self.experiment, self.name, self.target)) != 1:
            raise ValueError("a baseline is exactly one of: experiment, name, target")
        return self


class GateSpec(_Strict):
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    max_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fail_on_regression: bool = True
    min_difference: float = Field(default=0.0, ge=0.0, description="regressions smaller than this are ignored")


class EvalConfig(_Strict):
    name: str = Field(min_length=1, max_length=200)
    dataset: DatasetRef
    target: TargetSpec
    metrics: list[MetricSpec] = Field(min_length=1)
    baseline: BaselineSpec | None = None
    gate: GateSpec = Field(default_factory=GateSpec)
    concurrency: int = Field(default=4, ge=1, le=64)
    judge_model: str | None = None
    report_dir: Path | None = None

    @field_validator("metrics", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique(self) -> EvalConfig:
        names = [m.as_name or m.name for m in self.metrics]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"metrics listed twice: {twice} (name each with 'as: ...')")
        return self


def load_eval_config(path: Path) -> EvalConfig:
    """Read and validate a YAML (or JSON) config; relative dataset files resolve against the config's folder."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise EvalConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EvalConfigError(f"{path}: the config must be a mapping (name, dataset, target, metrics, ...)")
    try:
        config = EvalConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise EvalConfigError(f"{path}: {problems}") from None
    if config.dataset.file is not None and not config.dataset.file.is_absolute():
        config.dataset.file = path.parent / config.dataset.file
    if config.report_dir is not None and not config.report_dir.is_absolute():
        config.report_dir = path.parent / config.report_dir
    return config
