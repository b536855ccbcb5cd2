"""What a prompt version holds, validated: messages, typed variables, model parameters, examples, tags."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.prompts._template import PromptTemplateError

__all__ = [
    "ALLOWED_STAGE_MOVES",
    "STAGES",
    "VARIABLE_TYPES",
    "ModelParams",
    "PromptSpec",
    "PromptVersion",
    "check_name",
    "check_variable_values",
]

STAGES = ("draft", "testing", "production", "deprecated")
#: The lifecycle: a draft is tested, a tested version goes to production or back to draft, production versions are
#: deprecated, and a deprecated version can be brought back for testing.
ALLOWED_STAGE_MOVES: dict[str, frozenset[str]] = {
    "draft": frozenset({"testing"}),
    "testing": frozenset({"draft", "production"}),
    "production": frozenset({"deprecated"}),
    "deprecated": frozenset({"testing"}),
}
VARIABLE_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
    "any": (object,),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_name(kind: str, value: str) -> str:
    """Names of prompts, labels and environments are also file names and URL segments: keep them plain."""
    if not _NAME.match(value):
        raise PromptTemplateError(
            f"{kind} {value!r} is not valid: use letters, digits, '.', '_' and '-' (starting with a letter or digit)"
        )
    return value


class ModelParams(BaseModel):
    """Model parameters a version carries. Unknown keys are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    response_json_schema: dict[str, Any] | None = None

    @field_validator("response_json_schema")
    @classmethod
    def _looks_like_a_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not ({"type", "properties", "$ref", "anyOf", "oneOf", "allOf", "enum"} & value.keys()):
            raise ValueError("response_json_schema must be a JSON Schema object (with 'type', 'properties', ...)")
        return value


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class PromptSpec(BaseModel):
    """The content of a version, as written in a prompt file or sent to the API."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1)
    variables: dict[str, Literal["str", "int", "float", "bool", "list", "dict", "any"]] | None = None
    params: ModelParams = Field(default_factory=ModelParams)
    examples: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PromptSpec:
        """Validate, turning pydantic's errors into one `PromptTemplateError` that names each bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise PromptTemplateError(f"invalid prompt: {problems}") from exc


@dataclass(frozen=True)
class PromptVersion:
    """One immutable version."""

    name: str
    version: int
    messages: list[dict[str, str]]
    variables: dict[str, str]
    params: dict[str, Any]
    examples: list[dict[str, Any]]
    tags: list[str]
    content_hash: str
    author: str
    commit_message: str
    created_at: datetime

    def spec(self) -> dict[str, Any]:
        """The content, in the shape of a prompt file (what `PromptSpec` reads back)."""
        return {
            "messages": self.messages,
            "variables": self.variables,
            "params": self.params,
            "examples": self.examples,
            "tags": self.tags,
        }


def check_variable_values(version: PromptVersion, values: dict[str, Any]) -> None:
    """Refuse missing, unknown and mistyped variables, naming each."""
    declared = version.variables
    missing = sorted(declared.keys() - values.keys())
    unknown = sorted(values.keys() - declared.keys())
    wrong = sorted(
        f"{name} (expected {kind}, got {type(values[name]).__name__})"
        for name, kind in declared.items()
        if name in values and not _has_type(values[name], kind)
    )
    if missing or unknown or wrong:
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unknown {unknown}"] if unknown else []
        parts += [f"wrong type: {', '.join(wrong)}"] if wrong else []
        raise PromptTemplateError(
            f"prompt {version.name!r} v{version.version} takes {sorted(declared)}: {'; '.join(parts)}"
        )


def _has_type(value: Any, kind: str) -> bool:
    if kind in ("int", "float") and isinstance(value, bool):
        return False
    return isinstance(value, VARIABLE_TYPES[kind])
