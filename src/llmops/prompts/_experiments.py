"""A/B tests and canaries on a label: traffic split between versions by weight, with sticky assignment.

While an experiment runs on ``(prompt, environment, label)``, each request is assigned a variant by hashing the
experiment id with a key (a user or session id): the same key always gets the same version. The RAG pipeline records
each request's standard outcomes (latency, cost, error, guardrail block, abstention); anything else (thumbs, online
evaluation scores) is recorded with `Experiments.record_outcome`. `Experiments.evaluate` compares each variant with
the control, rolls a canary back when it crosses an error or guardrail bound, and can promote a significant winner.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from llmops.prompts._approvals import ApprovalRequiredError
from llmops.prompts._stats import Comparison, compare
from llmops.prompts._tables import ExperimentOutcomeRow, ExperimentRow, LabelHistoryRow
from llmops.prompts._template import PromptTemplateError
from llmops.store import Store

if TYPE_CHECKING:
    from llmops.prompts._registry import PromptRegistry

__all__ = ["METRIC_DIRECTIONS", "Experiment", "ExperimentSettings", "Experiments"]

#: Whether a higher value is better, for the metrics llmops records itself and the usual feedback ones.
METRIC_DIRECTIONS = {
    "feedback": True,
    "score": True,
    "grounding": True,
    "latency_ms": False,
    "cost_usd": False,
    "error": False,
    "guardrail_blocked": False,
    "abstained": False,
    "output_tokens": False,
}


class ExperimentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    primary_metric: str = "feedback"
    higher_is_better: bool | None = None  # None: from METRIC_DIRECTIONS (custom metrics: higher is better)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    min_samples: int = Field(default=100, ge=2)  # per variant, before any automatic action
    auto_promote: bool = False
    max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    max_guardrail_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    check_every: int = Field(default=50, ge=1)  # the pipeline evaluates after this many requests

    def direction(self, metric: str) -> bool:
        if metric == self.primary_metric and self.higher_is_better is not None:
            return self.higher_is_better
        return METRIC_DIRECTIONS.get(metric, True)


@dataclass(frozen=True)
class Experiment:
    id: str
    prompt_name: str
    environment: str
    label: str
    variants: list[tuple[int, float]]  # (version, weight), weights summing to 1
    control_version: int
    settings: ExperimentSettings
    status: str
    result: dict[str, Any]
    created_by: str
    created_at: datetime
    ended_at: datetime | None

    def assign(self, key: str) -> int:
        """The version serving ``key``: deterministic, so a user stays on one variant."""
        digest = hashlib.sha256(f"{self.id}:{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        cumulative = 0.0
        for version, weight in self.variants:
            cumulative += weight
            if point < cumulative:
                return version
        return self.variants[-1][0]


def _experiment(row: ExperimentRow) -> Experiment:
    return Experiment(
        id=row.id,
        prompt_name=row.prompt_name,
        environment=row.environment,
        label=row.label,
        variants=[(int(v["version"]), float(v["weight"])) for v in row.variants],
        control_version=row.control_version,
        settings=ExperimentSettings.model_validate(row.settings),
        status=row.status,
        result=dict(row.result or {}),
        created_by=row.created_by,
        created_at=row.created_at,
        ended_at=row.ended_at,
    )


class Experiments:
    def __init__(self, store: Store, registry: PromptRegistry, *, cache_ttl: float = 10.0) -> None:
        self._store = store
        self._registry = registry
        self._ttl = cache_ttl
        self._active: dict[tuple[str, str, str], tuple[float, Experiment | None]] = {}
        self._counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def start(
        self,
        prompt_name: str,
        label: str,
        variants: dict[int, float],
        *,
        environment: str | None = None,
        by: str,
        settings: ExperimentSettings | dict[str, Any] | None = None,
    ) -> Experiment:
        """Split ``label``'s traffic between versions by weight. The label's current version is the control and
        must be one of the variants; one experiment at a time per label."""
        env = self._registry._environment(environment)
        chosen = ExperimentSettings.model_validate(settings or {})
        control = self._registry.labels(prompt_name, env).get(label)
        if control is None:
            raise PromptTemplateError(f"{prompt_name} has no label {label!r} in {env} to experiment on")
        if control not in variants or len(variants) < 2:
            raise PromptTemplateError(
                f"an experiment needs the current version v{control} of {env}/{label} and at least one other version"
            )
        if any(w <= 0 for w in variants.values()):
            raise PromptTemplateError("variant weights must be positive")
        for version in variants:
            self._registry.get_version(prompt_name, version)
        if self.active(prompt_name, env, label, fresh=True) is not None:
            raise PromptTemplateError(f"an experiment is already running on {prompt_name} {env}/{label}")
        total = sum(variants.values())
        row = ExperimentRow(
            id="exp_" + secrets.token_hex(8),
            prompt_name=prompt_name,
            environment=env,
            label=label,
            variants=[{"version": v, "weight": w / total} for v, w in sorted(variants.items())],
            control_version=control,
            settings=chosen.model_dump(),
            status="running",
            result={},
            created_by=by,
            created_at=datetime.now(UTC),
        )
        with self._store.session() as session:
            session.add(row)
            session.add(self._history(row, by, f"experiment {row.id} started: {row.variants}"))
        self._forget(prompt_name, env, label)
        return self.get(row.id)

    def get(self, experiment_id: str) -> Experiment:
        with self._store.session() as session:
            row = session.get(ExperimentRow, experiment_id)
            if row is None:
                raise LookupError(f"no experiment {experiment_id!r}")
            return _experiment(row)

    def list_experiments(self, *, prompt_name: str | None = None, status: str | None = None) -> list[Experiment]:
        with self._store.session() as session:
            query = select(ExperimentRow).order_by(ExperimentRow.created_at)
            if prompt_name:
                query = query.where(ExperimentRow.prompt_name == prompt_name)
            if status:
                query = query.where(ExperimentRow.status == status)
            return [_experiment(r) for r in session.scalars(query)]

    def active(self, prompt_name: str, environment: str, label: str, *, fresh: bool = False) -> Experiment | None:
        """The running experiment on this label, if any (cached like labels, for the request path)."""
        key = (prompt_name, environment, label)
        cached = self._active.get(key)
        if cached is not None and not fresh and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        with self._store.session() as session:
            row = session.scalars(
                select(ExperimentRow).where(
                    ExperimentRow.prompt_name == prompt_name,
                    ExperimentRow.environment == environment,
                    ExperimentRow.label == label,
                    ExperimentRow.status == "running",
                )
            ).first()
            found = _experiment(row) if row else None
        self._active[key] = (time.monotonic(), found)
        return found

    def _forget(self, prompt_name: str, environment: str, label: str) -> None:
        self._active.pop((prompt_name, environment, label), None)

    # ---- outcomes ---------------------------------------------------------------------------------------------

    def record_outcomes(self, experiment_id: str, version: int, request_id: str, values: dict[str, float]) -> None:
        now = datetime.now(UTC)
        with self._store.session() as session:
            session.add_all(
                ExperimentOutcomeRow(
                    experiment_id=experiment_id, version=version, request_id=request_id, metric=m, value=v, at=now
                )
                for m, v in values.items()
            )

    def record_outcome(self, request_id: str, metric: str, value: float) -> Experiment:
        """Attach a later outcome (a thumbs up = 1, a score) to the request's experiment and variant."""
        with self._store.session() as session:
            seen = session.scalars(
                select(ExperimentOutcomeRow).where(ExperimentOutcomeRow.request_id == request_id).limit(1)
            ).first()
            if seen is None:
                raise LookupError(f"request {request_id!r} was not served by an experiment")
            experiment_id, version = seen.experiment_id, seen.version
        self.record_outcomes(experiment_id, version, request_id, {metric: float(value)})
        return self.get(experiment_id)

    def count_request(self, experiment: Experiment) -> bool:
        """Count a served request; True every ``check_every`` requests, when the caller should `evaluate`."""
        with self._lock:
            self._counts[experiment.id] += 1
            return self._counts[experiment.id] % experiment.settings.check_every == 0

    def outcomes(self, experiment_id: str) -> dict[int, dict[str, list[float]]]:
        """Values by version, then metric."""
        out: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        with self._store.session() as session:
            rows = session.execute(
                select(ExperimentOutcomeRow.version, ExperimentOutcomeRow.metric, ExperimentOutcomeRow.value).where(
                    ExperimentOutcomeRow.experiment_id == experiment_id
                )
            )
            for version, metric, value in rows:
                out[version][metric].append(value)
        return out

    def compare(self, experiment_id: str, metric: str | None = None) -> list[tuple[int, Comparison]]:
        """Each non-control variant against the control on ``metric`` (the primary metric by default)."""
        experiment = self.get(experiment_id)
        name = metric or experiment.settings.primary_metric
        data = self.outcomes(experiment_id)
        control = data[experiment.control_version][name]
        return [
            (
                version,
                compare(
                    name,
                    control,
                    data[version][name],
                    alpha=experiment.settings.alpha,
                    higher_is_better=experiment.settings.direction(name),
                ),
            )
            for version, _ in experiment.variants
            if version != experiment.control_version
        ]

    # ---- decisions --------------------------------------------------------------------------------------------

    def evaluate(self, experiment_id: str, *, by: str = "llmops") -> dict[str, Any]:
        """Apply the experiment's automatic rules; returns what was decided and why."""
        experiment = self.get(experiment_id)
        if experiment.status != "running":
            return {"action": "none", "reason": f"experiment is {experiment.status}"}
        settings = experiment.settings
        data = self.outcomes(experiment_id)
        for version, _ in experiment.variants:
            if version == experiment.control_version:
                continue
            for metric, bound in (
                ("error", settings.max_error_rate),
                ("guardrail_blocked", settings.max_guardrail_rate),
            ):
                values = data[version][metric]
                if bound is not None and len(values) >= settings.min_samples and sum(values) / len(values) > bound:
                    reason = f"v{version} {metric} rate {sum(values) / len(values):.3f} > bound {bound}"
                    self._end(experiment, "rolled_back", by, {"reason": reason, "version": version})
                    return {"action": "rolled_back", "version": version, "reason": reason}
        if not settings.auto_promote:
            return {"action": "none", "reason": "auto_promote is off"}
        winners = [
            (version, c)
            for version, c in self.compare(experiment_id)
            if c.improved and min(c.control_n, c.variant_n) >= settings.min_samples
        ]
        if not winners:
            return {"action": "none", "reason": "no variant is significantly better yet"}
        version, best = max(winners, key=lambda w: abs(w[1].difference))
        reason = (
            f"v{version} {best.metric} {best.variant_mean:.4g} vs control {best.control_mean:.4g}, p={best.p_value:.4g}"
        )
        result: dict[str, Any] = {"reason": reason, "version": version}
        try:
            self._registry.move_label(
                experiment.prompt_name,
                experiment.label,
                version,
                environment=experiment.environment,
                by=f"experiment:{experiment.id}",
                reason=reason,
            )
        except ApprovalRequiredError:
            request = self._registry.approvals.request(
                experiment.prompt_name,
                experiment.label,
                version,
                environment=experiment.environment,
                by=f"experiment:{experiment.id}",
                reason=reason,
            )
            result["change_request"] = request.id
        self._end(experiment, "promoted", by, result)
        return {"action": "promoted", **result}

    def stop(self, experiment_id: str, *, by: str, reason: str = "") -> Experiment:
        """End the experiment; the label keeps pointing at the control."""
        experiment = self.get(experiment_id)
        if experiment.status != "running":
            raise PromptTemplateError(f"experiment {experiment_id} is already {experiment.status}")
        self._end(experiment, "stopped", by, {"reason": reason or "stopped"})
        return self.get(experiment_id)

    def _end(self, experiment: Experiment, status: str, by: str, result: dict[str, Any]) -> None:
        with self._store.session() as session:
            row = session.get(ExperimentRow, experiment.id)
            assert row is not None
            row.status, row.result, row.ended_at = status, result, datetime.now(UTC)
            session.add(self._history(row, by, f"experiment {row.id} {status}: {result.get('reason', '')}"))
        self._forget(experiment.prompt_name, experiment.environment, experiment.label)

    @staticmethod
    def _history(row: ExperimentRow, by: str, detail: str) -> LabelHistoryRow:
        return LabelHistoryRow(
            prompt_name=row.prompt_name,
            kind="experiment",
            environment=row.environment,
            label=row.label,
            detail=detail,
            actor=by,
            at=datetime.now(UTC),
        )
