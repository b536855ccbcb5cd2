"""What a trigger or runbook can do: the built-in actions, and plugins from the ``llmops.actions`` entry point.

An action is a name, whether it changes production (such actions can be held for approval), a parameter model that
is checked when a rule is loaded (a misspelt parameter fails at start, not at 3 a.m.), and ``run``.

>>> ACTIONS["rollback_prompt"].check({"prompt": "rag-default", "label": "production"})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.evaluation import DatasetRegistry, examples_from_traces
from llmops.gateway import Gateway
from llmops.guardrails import GuardrailPolicy, PolicyRegistry
from llmops.knowledge import FetchError, KnowledgeBase, apost_json
from llmops.loop._reviews import ReviewQueue
from llmops.observability import TraceReader
from llmops.prompts import PromptRegistry
from llmops.store import AuditHook

__all__ = ["ACTIONS", "Action", "ActionContext", "ActionError", "check_params", "load_actions"]

logger = logging.getLogger("llmops.loop")
_P = TypeVar("_P", bound=BaseModel)


class ActionError(RuntimeError):
    """An action could not do what it was asked; the message says why."""


@dataclass
class ActionContext:
    """The platform parts actions work on, and who is acting (``trigger:<rule>``, ``runbook:<name>`` or a user)."""

    actor: str
    prompts: PromptRegistry
    guardrail_policies: PolicyRegistry
    knowledge: KnowledgeBase
    gateway: Gateway
    datasets: DatasetRegistry
    traces: TraceReader
    reviews: ReviewQueue
    audit: AuditHook
    webhook_allowlist: list[str] = field(default_factory=list)
    negative_feedback: Callable[[datetime], list[str]] = lambda since: []
    firing: dict[str, Any] = field(default_factory=dict)  # the firing's id, rule and inputs


class Action(Protocol):
    """An action: ``run(params, context) -> result`` (a JSON-able dict); raise `ActionError` to fail clearly."""

    @property
    def name(self) -> str: ...

    @property
    def changes_production(self) -> bool: ...

    @property
    def Params(self) -> type[BaseModel]: ...

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]: ...


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- built-in actions ---------------------------------------------------------------------------------------------


class RollbackPrompt:
    """Put a prompt label back on the version it pointed at before its last move."""

    name = "rollback_prompt"
    changes_production = True

    class Params(_Params):
        prompt: str
        label: str = "production"
        environment: str | None = None

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        before = context.prompts.labels(p.prompt, p.environment).get(p.label)
        try:
            version = context.prompts.rollback(
                p.prompt, p.label, environment=p.environment, by=context.actor, reason=_reason(context)
            )
        except (ValueError, LookupError) as exc:
            raise ActionError(f"cannot roll back {p.prompt}@{p.label}: {exc}") from exc
        return {"prompt": p.prompt, "label": p.label, "from_version": before, "to_version": version}


class Reindex:
    """Run ingestion over one registered source (or every source): picks up new, changed and deleted documents."""

    name = "reindex"
    changes_production = True

    class Params(_Params):
        source: str | None = Field(default=None, description="a registered source's location; every source if unset")

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        report = context.knowledge.ingest(p.source)
        counts = {
            k: len(v)
            for k, v in (
                ("added", report.added),
                ("updated", report.updated),
                ("removed", report.removed),
                ("failed", report.failed),
            )
        }
        return {"source": p.source or "*", "snapshot": report.snapshot_id, **counts}


class ShiftRouting:
    """Set a weighted router's split, e.g. move traffic away from a model that degraded."""

    name = "shift_routing"
    changes_production = True

    class Params(_Params):
        router: str
        weights: dict[str, float]

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        router = context.gateway.routers.get(p.router)
        if router is None:
            raise ActionError(f"no router {p.router!r}; routers: {', '.join(context.gateway.routers) or 'none'}")
        try:
            previous = router.set_weights(p.weights)
        except ValueError as exc:
            raise ActionError(str(exc)) from exc
        context.audit(
            context.actor,
            "gateway.router.weights",
            "router",
            p.router,
            before=previous,
            after=p.weights,
            details={"from": previous, "to": p.weights, "reason": _reason(context)},
        )
        return {"router": p.router, "from": previous, "to": p.weights}


class FailOver:
    """Stop sending to a model for a while: its calls go to its fallbacks (the circuit is held open)."""

    name = "fail_over"
    changes_production = True

    class Params(_Params):
        model: str
        seconds: float = Field(default=600.0, gt=0, le=7 * 86_400)

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        try:
            config = context.gateway.model(p.model)
            breaker = context.gateway.breaker(p.model)
        except (KeyError, LookupError, ValueError) as exc:
            raise ActionError(f"cannot fail over {p.model!r}: {exc}") from exc
        breaker.hold_open(p.seconds)
        context.audit(
            context.actor,
            "gateway.model.fail_over",
            "model",
            p.model,
            after={"held_open_s": p.seconds},
            details={"fallbacks": list(config.fallbacks), "reason": _reason(context)},
        )
        return {"model": p.model, "held_open_s": p.seconds, "fallbacks": list(config.fallbacks)}


class TightenGuardrail:
    """Raise (or set) a rail's threshold in a guardrail policy: a new policy version, and the label moved to it."""

    name = "tighten_guardrail"
    changes_production = True

    class Params(_Params):
        policy: str
        rail: str
        threshold: float = Field(ge=0.0, le=1.0)
        stage: str | None = Field(default=None, description="input or output; every stage with the rail if unset")
        label: str = "production"
        environment: str | None = None

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        registry = context.guardrail_policies
        try:
            current = registry.get(p.policy, label=p.label, environment=p.environment)
        except LookupError as exc:
            raise ActionError(f"cannot tighten {p.policy!r}: {exc}") from exc
        data = current.policy.model_dump(mode="json", exclude_none=True)
        changed = 0
        for where in ("input", "output"):
            for rail in data.get(where) or []:
                if rail.get("rail") == p.rail and p.stage in (None, rail.get("stage", where)):
                    rail["threshold"] = p.threshold
                    changed += 1
        if not changed:
            raise ActionError(f"policy {p.policy!r} v{current.version} has no rail {p.rail!r} to tighten")
        try:
            version = registry.create(
                GuardrailPolicy.parse(data),
                author=context.actor,
                message=f"{p.rail} threshold -> {p.threshold}: {_reason(context)}",
            )
        except ValueError as exc:
            raise ActionError(f"the tightened policy is invalid: {exc}") from exc
        registry.move_label(
            p.policy, p.label, version.version, environment=p.environment, by=context.actor, reason=_reason(context)
        )
        return {
            "policy": p.policy,
            "from_version": current.version,
            "to_version": version.version,
            "rail": p.rail,
            "threshold": p.threshold,
        }


class OpenReview:
    """Open a review item for a person, holding the firing's inputs."""

    name = "open_review"
    changes_production = False

    class Params(_Params):
        title: str = Field(min_length=1, max_length=500)
        details: dict[str, Any] = Field(default_factory=dict)

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        details = {**p.details, "firing": context.firing}
        item = context.reviews.open(p.title, details, firing_id=context.firing.get("id"))
        return {"review_item": item}


class Webhook:
    """POST the firing as JSON to an allowlisted URL (SSRF rules apply: public addresses only, no redirects)."""

    name = "webhook"
    changes_production = False

    class Params(_Params):
        url: str
        message: str = ""
        timeout_s: float = Field(default=10.0, gt=0, le=60)

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        allowed = [prefix for prefix in context.webhook_allowlist if p.url.startswith(prefix)]
        if not allowed:
            raise ActionError(f"refused: {p.url} is not on triggers.webhook_allowlist")
        # An operator who allowlists an internal URL (a chat relay on the intranet) trusts that host; every other
        # host is checked for public addresses.
        trusted = any(_host(prefix) == _host(p.url) for prefix in allowed)
        payload = {"message": p.message, "firing": context.firing, "actor": context.actor}
        try:
            status = asyncio.run(apost_json(p.url, payload, timeout=p.timeout_s, allow_private=trusted))
        except FetchError as exc:
            raise ActionError(str(exc)) from exc
        return {"url": p.url, "status": status}


class Alert:
    """Record an alert (in the log, the firing and the audit trail), and post it to an allowlisted webhook if given."""

    name = "alert"
    changes_production = False

    class Params(_Params):
        message: str = Field(min_length=1, max_length=2_000)
        url: str | None = None

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        logger.warning("alert from %s: %s", context.actor, p.message)
        result: dict[str, Any] = {"message": p.message}
        if p.url:
            result["webhook"] = Webhook().run(Webhook.Params(url=p.url, message=p.message), context)
        return result


class AddToDataset:
    """Queue recent production requests as draft examples of a dataset (reviewed before they enter a version):
    low-grounding answers and/or those with negative feedback, from the firing's window."""

    name = "add_to_dataset"
    changes_production = False

    class Params(_Params):
        dataset: str
        app: str | None = None
        max_grounding: float | None = Field(default=None, ge=0.0, le=1.0)
        negative_feedback: bool = False
        since_s: float = Field(default=3600.0, gt=0)
        limit: int = Field(default=50, ge=1, le=1000)

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        p = _as(params, self.Params)
        since = datetime.now(UTC) - timedelta(seconds=p.since_s)
        request_ids = context.negative_feedback(since) if p.negative_feedback else None
        if request_ids is not None and not request_ids:
            return {"dataset": p.dataset, "drafts": 0}
        traces = context.traces.select_answers(
            app=p.app, max_grounding=p.max_grounding, since=since, request_ids=request_ids, limit=p.limit
        )
        drafts = context.datasets.add_drafts(p.dataset, examples_from_traces(traces), origin=context.actor)
        return {"dataset": p.dataset, "drafts": len(drafts)}


class Throttle:
    """Set a rate limit (requests and/or tokens per minute) on a key, user, team, app or tag, in this process."""

    name = "throttle"
    changes_production = True

    class Params(_Params):
        scope: str = Field(pattern="^(key|user|team|app|tag|global)$")
        value: str | None = None
        requests_per_minute: int | None = Field(default=None, ge=1)
        tokens_per_minute: int | None = Field(default=None, ge=1)

    def run(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        from llmops._settings import LimitConfig

        p = _as(params, self.Params)
        if p.requests_per_minute is None and p.tokens_per_minute is None:
            raise ActionError("throttle needs requests_per_minute and/or tokens_per_minute")
        name = f"throttle-{p.scope}-{p.value or 'all'}"
        limit = LimitConfig(
            name=name,
            scope=p.scope,
            value=p.value,
            requests_per_minute=p.requests_per_minute,
            tokens_per_minute=p.tokens_per_minute,
        )
        replaced = context.gateway.limits.set_limit(limit)
        context.audit(
            context.actor,
            "gateway.limit.set",
            "limit",
            name,
            before=replaced.model_dump() if replaced else None,
            after=limit.model_dump(),
            details={"reason": _reason(context)},
        )
        return {"limit": limit.model_dump(exclude_none=True)}


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        RollbackPrompt(),
        Reindex(),
        ShiftRouting(),
        FailOver(),
        TightenGuardrail(),
        OpenReview(),
        Webhook(),
        Alert(),
        AddToDataset(),
        Throttle(),
    )
}


def load_actions() -> dict[str, Action]:
    """The built-in actions and those plugins register under the ``llmops.actions`` entry point group."""
    from importlib.metadata import entry_points

    actions = dict(ACTIONS)
    for entry in entry_points(group="llmops.actions"):
        loaded = entry.load()
        action = loaded() if isinstance(loaded, type) else loaded
        actions[action.name] = action
    return actions


def check_params(actions: dict[str, Action], name: str, params: dict[str, Any]) -> BaseModel:
    """Validate an action's parameters; raises ValueError naming the action and the problem."""
    action = actions.get(name)
    if action is None:
        raise ValueError(f"unknown action {name!r}; actions: {', '.join(sorted(actions))}")
    try:
        return action.Params.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"action {name!r}: {problems}") from None


def _as(params: BaseModel, model: type[_P]) -> _P:
    return params if isinstance(params, model) else model.model_validate(params.model_dump())


def _reason(context: ActionContext) -> str:
    rule = context.firing.get("rule")
    return f"{context.actor}" + (f" ({rule})" if rule and rule not in context.actor else "")


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "").lower()
