"""Guardrail policies as code: which rails run on the input and the output, with thresholds and actions.

A policy is a YAML (or JSON) document, validated when it is loaded: an unknown rail, an action a rail cannot take,
a threshold outside [0, 1] or a misspelt key is refused with a message that names it.

    name: support
    latency_budget_ms: 40
    input:
      - {rail: size, max_chars: 4000}
      - {rail: rate, max_requests: 30, per_seconds: 60}
      - {rail: pii, action: pseudonymize}
      - {rail: injection, action: block, message: "I can't help with that."}
      - {rail: topics, denied: ["medical advice", "legal advice"], action: block}
    output:
      - {rail: pii_leakage, action: redact}
      - {rail: toxicity, action: fallback, message: "Let me rephrase that."}
      - {rail: grounding, threshold: 0.5, action: warn}
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["RAIL_ACTIONS", "RAIL_STAGES", "GuardrailPolicy", "PolicyError", "RailSpec"]

Action = Literal["block", "redact", "mask", "pseudonymize", "drop", "warn", "reask", "fallback"]

#: Where each rail runs and the actions it can take (the first is its default).
RAIL_STAGES: dict[str, Literal["input", "context", "output"]] = {
    "size": "input",
    "rate": "input",
    "pii": "input",
    "injection": "input",
    "topics": "input",
    "indirect_injection": "context",
    "pii_leakage": "output",
    "toxicity": "output",
    "system_prompt_leakage": "output",
    "grounding": "output",
    "citations": "output",
    "json_schema": "output",
    "custom": "input",  # or "output": a custom rail runs where the policy lists it
}
RAIL_ACTIONS: dict[str, tuple[str, ...]] = {
    "size": ("block", "warn"),
    "rate": ("block", "warn"),
    "pii": ("redact", "mask", "pseudonymize", "block", "warn"),
    "injection": ("block", "warn"),
    "topics": ("block", "warn"),
    "indirect_injection": ("drop", "block", "warn"),
    "pii_leakage": ("redact", "mask", "block", "warn"),
    "toxicity": ("fallback", "block", "warn"),
    "system_prompt_leakage": ("block", "fallback", "warn"),
    "grounding": ("warn", "fallback", "block"),
    "citations": ("warn", "fallback", "block"),
    "json_schema": ("reask", "block", "warn"),
    "custom": ("block", "redact", "mask", "warn", "fallback"),
}


class PolicyError(ValueError):
    """A policy that cannot be used; the message says what is wrong and where."""


class RailSpec(BaseModel):
    """One rail of a policy."""

    model_config = ConfigDict(extra="forbid")

    rail: Literal[
        "size", "rate", "pii", "injection", "topics", "indirect_injection", "pii_leakage", "toxicity",
        "system_prompt_leakage", "grounding", "citations", "json_schema", "custom",
    ]  # fmt: skip
    action: Action | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    message: str | None = Field(default=None, max_length=2000, description="the answer when it blocks or falls back")
    entities: list[str] | None = Field(default=None, description="pii / pii_leakage: entity types to act on")
    allowed: list[str] = Field(default_factory=list, description="topics: example questions that are in scope")
    denied: list[str] = Field(default_factory=list, description="topics: example questions that are out of scope")
    max_chars: int | None = Field(default=None, ge=1, description="size: the longest input accepted")
    max_requests: int | None = Field(default=None, ge=1, description="rate: requests allowed per user per window")
    per_seconds: float = Field(default=60.0, gt=0, description="rate: the window")
    restore: bool = Field(default=True, description="pii pseudonymize: put the values back into the answer")
    ner: bool = Field(default=False, description="pii / pii_leakage: also find names with the NER model (slower)")
    allowed_threshold: float = Field(
        default=0.3, ge=0.0, le=1.0, description="topics: below this similarity to every allowed example is off-topic"
    )
    json_schema: dict[str, Any] | None = Field(default=None, description="json_schema: what the answer must match")
    detector: str | None = Field(default=None, description="custom: the name of a registered detector")
    required: bool = Field(default=False, description="run even when the policy's latency budget is spent")

    @model_validator(mode="after")
    def _consistent(self) -> RailSpec:
        allowed = RAIL_ACTIONS[self.rail]
        if self.action is None:
            self.action = allowed[0]  # type: ignore[assignment]
        elif self.action not in allowed:
            raise ValueError(f"rail {self.rail!r} cannot {self.action!r}; it can {', '.join(allowed)}")
        if self.rail == "topics" and not (self.allowed or self.denied):
            raise ValueError("rail 'topics' needs example questions under 'allowed' or 'denied'")
        if self.rail == "size" and self.max_chars is None:
            raise ValueError("rail 'size' needs max_chars")
        if self.rail == "rate" and self.max_requests is None:
            raise ValueError("rail 'rate' needs max_requests (per user, per per_seconds)")
        if self.rail == "json_schema":
            _check_schema(self.json_schema)
        if (self.rail == "custom") != (self.detector is not None):
            raise ValueError("rail 'custom' needs 'detector' (a registered detector's name); other rails take none")
        if (self.entities is not None or self.ner) and self.rail not in ("pii", "pii_leakage"):
            raise ValueError(f"rail {self.rail!r} takes no entities or ner")
        if self.entities:
            from llmops.guardrails._pii import PII_ENTITY_TYPES

            unknown = sorted(set(self.entities) - PII_ENTITY_TYPES)
            if unknown:
                raise ValueError(f"unknown entity types {unknown}; known: {', '.join(sorted(PII_ENTITY_TYPES))}")
        return self

    @property
    def stage(self) -> str:
        return RAIL_STAGES[self.rail]


def _check_schema(schema: dict[str, Any] | None) -> None:
    if schema is None:
        raise ValueError("rail 'json_schema' needs json_schema (the JSON Schema the answer must match)")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"json_schema is not a valid JSON Schema: {exc.message}") from None


class GuardrailPolicy(BaseModel):
    """Rails for the input (and retrieved context) and the output of a request."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    latency_budget_ms: float = Field(default=50.0, gt=0, description="model-based rails past it are skipped")
    input: list[RailSpec] = Field(default_factory=list)
    output: list[RailSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _stages(self) -> GuardrailPolicy:
        for where, rails in (("input", self.input), ("output", self.output)):
            for spec in rails:
                stage = "input" if spec.stage == "context" else spec.stage
                if spec.rail == "custom":
                    continue
                if stage != where:
                    raise ValueError(f"rail {spec.rail!r} runs on the {spec.stage}, not under {where!r}")
        return self

    @classmethod
    def parse(cls, data: Any) -> GuardrailPolicy:
        """Validate a policy, turning every problem into one `PolicyError` that names each bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise PolicyError(f"invalid guardrail policy: {problems}") from exc

    @classmethod
    def from_yaml(cls, text: str) -> GuardrailPolicy:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"invalid guardrail policy: not YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise PolicyError("invalid guardrail policy: a policy is a mapping (name, input, output, ...)")
        return cls.parse(data)

    def rails(self, stage: str) -> list[RailSpec]:
        """The rails of one stage (input, context or output), in the order the policy lists them."""
        if stage == "output":
            return list(self.output)
        return [r for r in self.input if (r.stage == "context") == (stage == "context")]


def default_policy() -> GuardrailPolicy:
    """What a fresh install runs: cheap rails only, so they cost a few milliseconds per request."""
    return GuardrailPolicy.parse(
        {
            "name": "default",
            "description": (
                "Size limit, prompt injection blocked, injected chunks dropped, PII kept out of answers, insults "
                "replaced, the system prompt kept private, grounding scored."
            ),
            "input": [
                {"rail": "size", "max_chars": 8000},
                {"rail": "injection", "action": "block", "required": True, "message": "I can't help with that."},
                {"rail": "indirect_injection", "action": "drop"},
            ],
            "output": [
                {"rail": "pii_leakage", "action": "redact"},
                {"rail": "toxicity", "action": "fallback", "message": "I can't answer that in a helpful way."},
                {"rail": "system_prompt_leakage", "action": "block", "message": "I can't share that."},
                {"rail": "grounding", "action": "warn", "threshold": 0.5},
            ],
        }
    )
