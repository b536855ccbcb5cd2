"""Trigger rules as data: a condition over a window, a threshold, a cool-down, and the actions to take.

```yaml
triggers:
  - name: grounding-drop
    when: {metric: "online:faithfulness", app: handbook-rag, window_s: 600, min_count: 5, op: "<", threshold: 0.5}
    cooldown_s: 3600
    actions:
      - rollback_prompt: {prompt: rag-default, label: production}
      - open_review: {title: "Answers lost their grounding; the prompt was rolled back"}
  - name: handbook-updated
    when: {source_changed: samples/handbook}
    actions: [{reindex: {source: samples/handbook}}]
```

Conditions: ``metric`` (see ``llmops.observability.METRICS``, ``online:<metric>``, ``thumbs_down_rate``,
``negative_feedback``), ``drift`` (an app's semantic drift test), ``event`` (feedback, guardrail blocks, ... counted
in a window) and ``source_changed`` (new, changed or deleted documents in a registered source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.loop._actions import Action, check_params

__all__ = [
    "DriftCondition",
    "EventCondition",
    "MetricCondition",
    "RuleError",
    "SourceCondition",
    "TriggerRule",
    "load_rules",
    "parse_rules",
]

Op = Literal["<", "<=", ">", ">="]


class RuleError(ValueError):
    """A trigger rule that cannot be used; the message names the rule and the problem."""


class _Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricCondition(_Condition):
    metric: str
    app: str | None = None
    where: dict[str, Any] = Field(default_factory=dict)
    window_s: float = Field(default=600.0, gt=0, le=90 * 86_400)
    last: int | None = Field(default=None, ge=1, description="only the newest N observations in the window")
    min_count: int = Field(default=1, ge=1, description="fewer observations than this never fire")
    op: Op
    threshold: float

    def describe(self) -> str:
        scope = f"last {self.last} in {self.window_s:g}s" if self.last else f"{self.window_s:g}s"
        return f"{self.metric}{'@' + self.app if self.app else ''} over {scope} {self.op} {self.threshold:g}"


class DriftCondition(_Condition):
    drift: str = Field(description="the app whose queries are tested")

    def describe(self) -> str:
        return f"semantic drift of {self.drift}"


class EventCondition(_Condition):
    event: str = Field(description="feedback | guardrail_block | ...")
    match: dict[str, Any] = Field(default_factory=dict, description="payload fields that must be equal")
    count: int = Field(default=1, ge=1)
    window_s: float = Field(default=600.0, gt=0)

    def describe(self) -> str:
        return f"{self.count}+ {self.event} events {self.match or ''} in {self.window_s:g}s".replace("  ", " ")


class SourceCondition(_Condition):
    source_changed: str = Field(description="a registered source's location")

    def describe(self) -> str:
        return f"documents changed in {self.source_changed}"


Condition = MetricCondition | DriftCondition | EventCondition | SourceCondition


class TriggerRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,99}$")
    description: str = ""
    when: Condition
    cooldown_s: float = Field(default=3600.0, ge=0, description="after firing, the rule rests this long")
    approval: bool = Field(default=False, description="actions that change production wait for an approver")
    enabled: bool = True
    actions: list[dict[str, dict[str, Any]]] = Field(min_length=1)

    @field_validator("actions")
    @classmethod
    def _one_action_per_item(cls, actions: list[dict[str, dict[str, Any]]]) -> list[dict[str, dict[str, Any]]]:
        for item in actions:
            if len(item) != 1:
                raise ValueError(f"each action is one {{name: params}} mapping, got {sorted(item)}")
        return actions

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, params or {}) for item in self.actions for name, params in item.items()]


def parse_rules(data: Any, actions: dict[str, Action]) -> list[TriggerRule]:
    """Rules from parsed YAML/JSON (a list, or a mapping with ``triggers``); every action's parameters checked."""
    if isinstance(data, dict) and "triggers" in data:
        data = data["triggers"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise RuleError("trigger rules are a list (or a mapping with a 'triggers' list)")
    rules: list[TriggerRule] = []
    for position, item in enumerate(data, start=1):
        label = item.get("name", f"#{position}") if isinstance(item, dict) else f"#{position}"
        try:
            rule = TriggerRule.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors()[:4])
            raise RuleError(f"trigger rule {label!r}: {problems}") from None
        for name, params in rule.steps():
            try:
                check_params(actions, name, params)
            except ValueError as exc:
                raise RuleError(f"trigger rule {label!r}: {exc}") from None
        if any(r.name == rule.name for r in rules):
            raise RuleError(f"two trigger rules are named {rule.name!r}")
        rules.append(rule)
    return rules


def load_rules(path: Path, actions: dict[str, Action]) -> list[TriggerRule]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleError(f"cannot read trigger rules from {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RuleError(f"{path} is not valid YAML: {exc}") from exc
    return parse_rules(data, actions)
