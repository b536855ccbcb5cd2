"""The trigger engine: evaluates rules over metrics, drift, events and sources, and runs their actions.

Every firing is recorded with the inputs that made it fire, every action with its parameters and result, each in
the audit log and as a trace (``llmops traces <firing id>``). Actions that change production wait for an approver
when the rule asks for approval; the rest of the firing's steps wait with them, so their order holds.
A rule rests for its cool-down after firing; the last firing is read from the store, so restarts do not reset it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from sqlalchemy import select

from llmops._spans import mark_error
from llmops.loop._actions import Action, ActionContext, ActionError, check_params
from llmops.loop._rules import (
    DriftCondition,
    EventCondition,
    MetricCondition,
    RuleError,
    SourceCondition,
    TriggerRule,
    parse_rules,
)
from llmops.loop._tables import ActionRunRow, TriggerFiringRow, TriggerRuleRow
from llmops.observability import REQUEST_ID, Aggregate, MetricsQuery
from llmops.store import AuditHook, Store

__all__ = ["Step", "TriggerEngine"]

logger = logging.getLogger("llmops.loop")

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_APPROVERS = frozenset({"approver", "admin"})


@dataclass(frozen=True)
class Step:
    """One step of a firing: an action with its parameters, or a ``check`` (a metric condition that must hold)."""

    action: str
    params: dict[str, Any]


class TriggerEngine:
    def __init__(
        self,
        store: Store,
        *,
        actions: dict[str, Action],
        context: Callable[[str, dict[str, Any]], ActionContext],
        metrics: MetricsQuery,
        audit: AuditHook,
        tracer: trace.Tracer,
        roles_of: Callable[[str], frozenset[str]],
        file_rules: list[TriggerRule] | None = None,
        drift_check: Callable[[str], Any] | None = None,
        pending_changes: Callable[[str], dict[str, Any]] | None = None,
        event_memory: int = 10_000,
    ) -> None:
        """``context(actor, firing)`` builds what actions work on; ``drift_check(app)`` returns a drift result
        (with ``drifted`` and ``to_dict()``) or None; ``pending_changes(location)`` what a source would ingest."""
        self._store = store
        self.actions = actions
        self._context = context
        self._metrics = metrics
        self._audit = audit
        self._tracer = tracer
        self._roles_of = roles_of
        self._file_rules = {r.name: r for r in file_rules or []}
        self._drift_check = drift_check
        self._pending_changes = pending_changes
        self._events: deque[tuple[float, str, dict[str, Any]]] = deque(maxlen=event_memory)
        self._lock = threading.Lock()  # one evaluation at a time: a rule must not fire twice in a race

    # ---- rules ----------------------------------------------------------------------------------------------------

    def rules(self) -> list[TriggerRule]:
        with self._store.session() as session:
            stored = [r.spec for r in session.scalars(select(TriggerRuleRow).order_by(TriggerRuleRow.name))]
        api_rules = parse_rules(stored, self.actions) if stored else []
        return [*self._file_rules.values(), *api_rules]

    def rule(self, name: str) -> TriggerRule:
        for rule in self.rules():
            if rule.name == name:
                return rule
        raise LookupError(f"no trigger rule {name!r}")

    def add_rule(self, spec: dict[str, Any], *, by: str) -> TriggerRule:
        """Create (or replace) an API rule; a rule from the YAML file cannot be replaced here."""
        (rule,) = parse_rules([spec], self.actions)
        if rule.name in self._file_rules:
            raise RuleError(f"trigger rule {rule.name!r} comes from the rules file; change it there")
        with self._store.session() as session:
            existing = session.get(TriggerRuleRow, rule.name)
            before = existing.spec if existing else None
            if existing is None:
                session.add(
                    TriggerRuleRow(
                        name=rule.name, spec=rule.model_dump(mode="json"), created_by=by, created_at=datetime.now(UTC)
                    )
                )
            else:
                existing.spec = rule.model_dump(mode="json")
        self._audit(
            by, "trigger.rule.save", "trigger_rule", rule.name, before=before, after=rule.model_dump(mode="json")
        )
        return rule

    def remove_rule(self, name: str, *, by: str) -> None:
        if name in self._file_rules:
            raise RuleError(f"trigger rule {name!r} comes from the rules file; remove it there")
        with self._store.session() as session:
            row = session.get(TriggerRuleRow, name)
            if row is None:
                raise LookupError(f"no trigger rule {name!r}")
            before = row.spec
            session.delete(row)
        self._audit(by, "trigger.rule.delete", "trigger_rule", name, before=before)

    # ---- events and evaluation ------------------------------------------------------------------------------------

    def notify(self, event: str, payload: dict[str, Any]) -> None:
        """An event rules can count (``when: {event: ...}``); cheap, callable from any thread."""
        self._events.append((time.time(), event, payload))

    def evaluate(self, *, now: datetime | None = None) -> list[dict[str, Any]]:
        """Check every enabled rule out of its cool-down; fire those whose condition holds. Returns the firings."""
        now = now or datetime.now(UTC)
        fired: list[dict[str, Any]] = []
        with self._lock:
            for rule in self.rules():
                if not rule.enabled or self._resting(rule, now):
                    continue
                try:
                    holds, inputs = self._condition(rule, now)
                except Exception as exc:  # one broken rule must not stop the others
                    logger.exception("trigger rule %s could not be evaluated", rule.name)
                    holds, inputs = False, {"error": str(exc)}
                if holds:
                    steps = [Step(name, params) for name, params in rule.steps()]
                    fired.append(
                        self.run(
                            rule.name,
                            steps,
                            inputs,
                            source="rule",
                            actor=f"trigger:{rule.name}",
                            approval=rule.approval,
                        )
                    )
        return fired

    def _resting(self, rule: TriggerRule, now: datetime) -> bool:
        if rule.cooldown_s <= 0:
            return False
        since = now - timedelta(seconds=rule.cooldown_s)
        with self._store.session() as session:
            last = session.scalar(
                select(TriggerFiringRow.id)
                .where(
                    TriggerFiringRow.rule == rule.name,
                    TriggerFiringRow.source == "rule",
                    TriggerFiringRow.created_at >= since,
                )
                .limit(1)
            )
        return last is not None

    def _condition(self, rule: TriggerRule, now: datetime) -> tuple[bool, dict[str, Any]]:
        when = rule.when
        inputs: dict[str, Any] = {"condition": when.describe(), "when": when.model_dump(mode="json")}
        if isinstance(when, MetricCondition):
            holds, aggregate = self._metric_holds(when, now)
            return holds, {**inputs, "value": aggregate.value, "count": aggregate.count}
        if isinstance(when, DriftCondition):
            if self._drift_check is None:
                return False, inputs
            result = self._drift_check(when.drift)
            if result is None:
                return False, {**inputs, "result": None}
            return bool(result.drifted), {**inputs, "result": result.to_dict()}
        if isinstance(when, EventCondition):
            cutoff = now.timestamp() - when.window_s
            matching = [
                payload
                for at, name, payload in list(self._events)
                if name == when.event and at >= cutoff and all(payload.get(k) == v for k, v in when.match.items())
            ]
            return len(matching) >= when.count, {**inputs, "count": len(matching), "latest": matching[-5:]}
        assert isinstance(when, SourceCondition)
        if self._pending_changes is None:
            return False, inputs
        changes = self._pending_changes(when.source_changed)
        return changes["changes"] > 0, {**inputs, "changes": changes}

    def _metric_holds(self, when: MetricCondition, now: datetime) -> tuple[bool, Aggregate]:
        aggregate = self._metrics.value(
            when.metric, app=when.app, window_s=when.window_s, where=when.where, last=when.last, now=now
        )
        holds = (
            aggregate.value is not None
            and aggregate.count >= when.min_count
            and _COMPARE[when.op](aggregate.value, when.threshold)
        )
        return holds, aggregate

    # ---- running steps --------------------------------------------------------------------------------------------

    def run(
        self,
        name: str,
        steps: list[Step],
        inputs: dict[str, Any],
        *,
        source: str,
        actor: str,
        approval: bool = False,
    ) -> dict[str, Any]:
        """Record a firing of ``name`` and run its steps in order (holding production changes for approval when
        ``approval``); a failed step or check stops the rest. Returns the firing with its action runs."""
        for step in steps:
            if step.action != "check":
                check_params(self.actions, step.action, step.params)
        firing_id = "fire_" + secrets.token_hex(8)
        now = datetime.now(UTC)
        with self._store.session() as session:
            session.add(
                TriggerFiringRow(
                    id=firing_id,
                    rule=name,
                    source=source,
                    created_at=now,
                    inputs=_jsonable(inputs),
                    status="running",
                    actor=actor,
                )
            )
            for position, step in enumerate(steps):
                session.add(
                    ActionRunRow(
                        id=f"{firing_id}-{position}",
                        firing_id=firing_id,
                        position=position,
                        action=step.action,
                        params=step.params,
                        status="queued",
                        result={},
                        created_at=now,
                    )
                )
        self._audit(
            actor,
            "trigger.fire",
            "trigger_rule",
            name,
            details={"firing": firing_id, "source": source, "inputs": _jsonable(inputs)},
        )
        firing = {"id": firing_id, "rule": name, "source": source, "inputs": _jsonable(inputs)}
        self._proceed(firing_id, firing, actor, approval=approval)
        return self.firing(firing_id)

    def _proceed(self, firing_id: str, firing: dict[str, Any], actor: str, *, approval: bool) -> None:
        with self._tracer.start_as_current_span(f"trigger {firing['rule']}", kind=trace.SpanKind.INTERNAL) as root:
            root.set_attributes(
                {
                    REQUEST_ID: firing_id,
                    "llmops.trigger.rule": firing["rule"],
                    "llmops.trigger.source": firing["source"],
                    "llmops.trigger.inputs": json.dumps(firing["inputs"], default=str)[:8_000],
                }
            )
            status = self._steps(firing_id, firing, actor, approval=approval)
            root.set_attribute("llmops.trigger.status", status)
        with self._store.session() as session:
            row = session.get(TriggerFiringRow, firing_id)
            assert row is not None
            row.status = status

    def _steps(self, firing_id: str, firing: dict[str, Any], actor: str, *, approval: bool) -> str:
        with self._store.session() as session:
            runs = list(
                session.scalars(
                    select(ActionRunRow)
                    .where(ActionRunRow.firing_id == firing_id, ActionRunRow.status.in_(("queued", "pending_approval")))
                    .order_by(ActionRunRow.position)
                )
            )
            session.expunge_all()
        holding = False
        for run in runs:
            action = self.actions.get(run.action)
            if holding or (approval and action is not None and action.changes_production):
                holding = True
                self._finish(run.id, "pending_approval", {}, finished=False)
                continue
            status, result = self._step(run, firing, actor)
            self._finish(run.id, status, result)
            if status != "done":
                self._skip_rest(firing_id, run.position)
                return "failed" if status == "failed" else "check_failed"
        return "pending_approval" if holding else "acted"

    def _step(self, run: ActionRunRow, firing: dict[str, Any], actor: str) -> tuple[str, dict[str, Any]]:
        with self._tracer.start_as_current_span(f"action {run.action}") as span:
            span.set_attributes({"llmops.action.name": run.action, "llmops.action.params": json.dumps(run.params)})
            try:
                if run.action == "check":
                    condition = MetricCondition.model_validate(run.params)
                    held, value = self._metric_holds(condition, datetime.now(UTC))
                    result = {"check": condition.describe(), "value": value.value, "count": value.count}
                    span.set_attribute("llmops.action.status", "done" if held else "check_failed")
                    return ("done" if held else "check_failed"), result
                action = self.actions[run.action]
                params = check_params(self.actions, run.action, run.params)
                result = action.run(params, self._context(actor, firing))
            except Exception as exc:  # a failed action is recorded, never raised into the engine
                expected = isinstance(exc, ActionError | ValueError | LookupError)
                if not expected:
                    logger.exception("action %s of firing %s failed", run.action, firing["id"])
                error = str(exc) if expected else f"{type(exc).__name__}: {exc}"
                mark_error(span, exc)
                self._audit(
                    actor,
                    f"action.{run.action}.failed",
                    "action_run",
                    run.id,
                    details={"params": run.params, "error": error[:2000], "firing": firing["id"]},
                )
                return "failed", {"error": error}
            span.set_attribute("llmops.action.status", "done")
        self._audit(
            actor,
            f"action.{run.action}",
            "action_run",
            run.id,
            details={"params": run.params, "result": _jsonable(result), "firing": firing["id"]},
        )
        return "done", _jsonable(result)

    def _finish(
        self, run_id: str, status: str, result: dict[str, Any], *, finished: bool = True, by: str | None = None
    ) -> None:
        with self._store.session() as session:
            row = session.get(ActionRunRow, run_id)
            assert row is not None
            row.status, row.result = status, result
            row.finished_at = datetime.now(UTC) if finished else None
            if by is not None:
                row.decided_by = by

    def _skip_rest(self, firing_id: str, after: int) -> None:
        with self._store.session() as session:
            for row in session.scalars(
                select(ActionRunRow).where(ActionRunRow.firing_id == firing_id, ActionRunRow.position > after)
            ):
                row.status = "skipped"

    # ---- approval -------------------------------------------------------------------------------------------------

    def approve(self, firing_id: str, *, by: str) -> dict[str, Any]:
        """Run a firing's held steps, as ``by`` (who must hold the approver or admin role)."""
        firing = self._held(firing_id, by)
        self._audit(by, "trigger.approve", "trigger_firing", firing_id, details={"rule": firing["rule"]})
        self._decide_held(firing_id, by)
        self._proceed(firing_id, firing, f"{by} (approving {firing['rule']})", approval=False)
        return self.firing(firing_id)

    def reject(self, firing_id: str, *, by: str, reason: str = "") -> dict[str, Any]:
        firing = self._held(firing_id, by)
        self._decide_held(firing_id, by, rejected=reason)
        self._audit(
            by, "trigger.reject", "trigger_firing", firing_id, details={"rule": firing["rule"], "reason": reason}
        )
        return self.firing(firing_id)

    def _decide_held(self, firing_id: str, by: str, *, rejected: str | None = None) -> None:
        """Record who decided on the held steps; a rejection also closes them and the firing."""
        with self._store.session() as session:
            held = select(ActionRunRow).where(
                ActionRunRow.firing_id == firing_id, ActionRunRow.status == "pending_approval"
            )
            for row in session.scalars(held):
                row.decided_by = by
                if rejected is not None:
                    row.status, row.result = "rejected", {"reason": rejected}
            if rejected is not None:
                fired = session.get(TriggerFiringRow, firing_id)
                assert fired is not None
                fired.status = "rejected"

    def _held(self, firing_id: str, by: str) -> dict[str, Any]:
        if not (self._roles_of(by) & _APPROVERS):
            raise PermissionError(f"{by!r} cannot approve actions: the approver or admin role is needed")
        firing = self.firing(firing_id)
        if firing["status"] != "pending_approval":
            raise ValueError(f"firing {firing_id} is {firing['status']}, not waiting for approval")
        return firing

    # ---- reading --------------------------------------------------------------------------------------------------

    def firing(self, firing_id: str) -> dict[str, Any]:
        with self._store.session() as session:
            row = session.get(TriggerFiringRow, firing_id)
            if row is None:
                raise LookupError(f"no trigger firing {firing_id!r}")
            runs = session.scalars(
                select(ActionRunRow).where(ActionRunRow.firing_id == firing_id).order_by(ActionRunRow.position)
            ).all()
            return _firing_dict(row, runs)

    def firings(self, *, rule: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = select(TriggerFiringRow).order_by(TriggerFiringRow.created_at.desc()).limit(limit)
        if rule is not None:
            query = query.where(TriggerFiringRow.rule == rule)
        with self._store.session() as session:
            rows = session.scalars(query).all()
            ids = [r.id for r in rows]
            runs: dict[str, list[ActionRunRow]] = {}
            if ids:
                for run in session.scalars(
                    select(ActionRunRow).where(ActionRunRow.firing_id.in_(ids)).order_by(ActionRunRow.position)
                ):
                    runs.setdefault(run.firing_id, []).append(run)
            return [_firing_dict(r, runs.get(r.id, [])) for r in rows]


def _firing_dict(row: TriggerFiringRow, runs: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "rule": row.rule,
        "source": row.source,
        "created_at": _iso(row.created_at),
        "status": row.status,
        "actor": row.actor,
        "inputs": row.inputs,
        "actions": [
            {
                "id": r.id,
                "action": r.action,
                "params": r.params,
                "status": r.status,
                "result": r.result,
                "finished_at": _iso(r.finished_at) if r.finished_at else None,
                "decided_by": r.decided_by,
            }
            for r in runs
        ],
    }


def _iso(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
