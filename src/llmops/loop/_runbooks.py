"""Incident runbooks: named sequences of actions and checks, run from the CLI, the API or the UI.

A runbook declares its parameters; ``${name}`` in a step's parameters is replaced by the value given at run time.
A ``check`` step is a metric condition that must hold for the runbook to go on (did the error rate come down?).

```yaml
runbooks:
  - name: prompt-regression
    params: {prompt: rag-default, label: production}
    steps:
      - rollback_prompt: {prompt: "${prompt}", label: "${label}"}
      - open_review: {title: "Prompt ${prompt} regressed and was rolled back"}
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.loop._actions import Action, check_params
from llmops.loop._rules import MetricCondition
from llmops.loop._triggers import Step

__all__ = ["BUILTIN_RUNBOOKS", "Runbook", "RunbookError", "load_runbooks"]

_REQUIRED = "<required>"
_PLACEHOLDER = re.compile(r"\$\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


class RunbookError(ValueError):
    pass


class Runbook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict, description=f"defaults; {_REQUIRED!r} marks a required one")
    steps: list[dict[str, dict[str, Any]]] = Field(min_length=1)

    def resolve(self, given: dict[str, Any], actions: dict[str, Action]) -> list[Step]:
        """The steps with parameters filled in; raises `RunbookError` for a missing or unknown parameter."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise RunbookError(
                f"runbook {self.name!r} has no parameter {', '.join(unknown)}; it takes "
                f"{', '.join(self.params) or 'none'}"
            )
        values = {**self.params, **given}
        missing = sorted(k for k, v in values.items() if v == _REQUIRED)
        if missing:
            raise RunbookError(f"runbook {self.name!r} needs {', '.join(missing)}")
        steps = []
        for item in self.steps:
            if len(item) != 1:
                raise RunbookError(f"runbook {self.name!r}: each step is one {{action: params}} mapping")
            ((action, params),) = item.items()
            filled = _fill(params or {}, values)
            try:
                if action == "check":
                    MetricCondition.model_validate(filled)
                else:
                    check_params(actions, action, filled)
            except (ValueError, ValidationError) as exc:
                raise RunbookError(f"runbook {self.name!r}: {exc}") from None
            steps.append(Step(action, filled))
        return steps


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return values.get(whole.group(1), value)
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), value)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


BUILTIN_RUNBOOKS = [
    Runbook(
        name="prompt-regression",
        description="A prompt version made answers worse: roll its label back and open a review.",
        params={"prompt": "rag-default", "label": "production", "environment": None},
        steps=[
            {"rollback_prompt": {"prompt": "${prompt}", "label": "${label}", "environment": "${environment}"}},
            {"open_review": {"title": "Prompt ${prompt} (${label}) regressed and was rolled back"}},
        ],
    ),
    Runbook(
        name="provider-outage",
        description="A model's provider is failing: send its traffic to its fallbacks for a while, and alert.",
        params={"model": _REQUIRED, "seconds": 900, "alert_url": None},
        steps=[
            {"fail_over": {"model": "${model}", "seconds": "${seconds}"}},
            {"alert": {"message": "Provider outage: ${model} failed over for ${seconds}s", "url": "${alert_url}"}},
        ],
    ),
    Runbook(
        name="cost-spike",
        description="Spend is running away: throttle the caller and alert.",
        params={"scope": "app", "value": None, "requests_per_minute": 10, "alert_url": None},
        steps=[
            {"throttle": {"scope": "${scope}", "value": "${value}", "requests_per_minute": "${requests_per_minute}"}},
            {
                "alert": {
                    "message": "Cost spike: ${scope} ${value} throttled to ${requests_per_minute} req/min",
                    "url": "${alert_url}",
                }
            },
        ],
    ),
]


def load_runbooks(path: Path | None, actions: dict[str, Action]) -> dict[str, Runbook]:
    """The built-in runbooks, plus (and overridden by) those in ``path``."""
    runbooks = {r.name: r for r in BUILTIN_RUNBOOKS}
    if path is None:
        return runbooks
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RunbookError(f"cannot read runbooks from {path}: {exc}") from exc
    items = data.get("runbooks") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise RunbookError(f"{path}: runbooks are a list (or a mapping with a 'runbooks' list)")
    for item in items:
        try:
            runbook = Runbook.model_validate(item)
        except ValidationError as exc:
            raise RunbookError(
                f"{path}: runbook {item.get('name', '?') if isinstance(item, dict) else '?'}: {exc.errors()[0]['msg']}"
            ) from None
        for step in runbook.steps:
            for action in step:
                if action != "check" and action not in actions:
                    raise RunbookError(f"{path}: runbook {runbook.name!r} uses unknown action {action!r}")
        runbooks[runbook.name] = runbook
    return runbooks
