"""Stored experiments: created, resumed, their results written one item at a time, read back as records.

An item's result is committed as soon as it is scored, so a run that is interrupted (Ctrl-C, a crash, a killed CI
job) resumes where it stopped: the next run of the same configuration on the same dataset version finds the
unfinished experiment and runs only the items it lacks. Results are also a cache: an item whose configuration hash
and example content match a result of any earlier experiment reuses its output instead of calling the model again.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select

from llmops.evaluation._results import ExperimentRecord, ItemResult
from llmops.evaluation._tables import EvalExperimentRow, EvalResultRow
from llmops.evaluation._types import Example, RetrievedContext, Sample, Score
from llmops.store import Store

__all__ = ["CachedResult", "ExperimentNotFoundError", "ExperimentStore", "cache_key", "config_hash", "stored_score"]


class ExperimentNotFoundError(LookupError):
    pass


def config_hash(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def cache_key(target_hash: str, example: Example) -> str:
    """What decides that an earlier output still answers this example: the resolved target and the example's content."""
    return hashlib.sha256(f"{target_hash}/{example.content_hash()}".encode()).hexdigest()


@dataclass(frozen=True)
class CachedResult:
    """An earlier output for the same configuration and example, and the scores it got (by metric name, with the
    metric's parameters, so a score is reused only for the same metric spec)."""

    sample: Sample
    scores: dict[str, dict[str, Any]]


class ExperimentStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    def start(
        self,
        *,
        name: str,
        dataset: str,
        dataset_version: int,
        config: dict[str, Any],
        metrics: dict[str, Any],
        author: str,
        resume: bool = True,
    ) -> str:
        """The id of the experiment to write into: an unfinished one of this name and configuration (resumed), or a
        new one."""
        digest = config_hash({"config": config, "metrics": metrics, "dataset": [dataset, dataset_version]})
        with self._store.session() as session:
            if resume:
                found = session.scalars(
                    select(EvalExperimentRow)
                    .where(
                        EvalExperimentRow.config_hash == digest,
                        EvalExperimentRow.name == name,
                        EvalExperimentRow.status == "running",
                    )
                    .order_by(EvalExperimentRow.created_at.desc())
                    .limit(1)
                ).first()
                if found is not None:
                    return found.id
            experiment_id = "exp_" + secrets.token_hex(6)
            session.add(
                EvalExperimentRow(
                    id=experiment_id,
                    name=name,
                    dataset=dataset,
                    dataset_version=dataset_version,
                    config=config,
                    config_hash=digest,
                    metrics=metrics,
                    status="running",
                    author=author,
                    created_at=datetime.now(UTC),
                )
            )
        return experiment_id

    def done_ids(self, experiment_id: str) -> set[str]:
        """Examples with a result the run need not redo: an item whose system call errored is tried again."""
        with self._store.session() as session:
            return set(
                session.scalars(
                    select(EvalResultRow.example_id).where(
                        EvalResultRow.experiment_id == experiment_id, EvalResultRow.error.is_(None)
                    )
                )
            )

    def cached(self, keys: Sequence[str], examples: dict[str, Example]) -> dict[str, CachedResult]:
        """Earlier error-free results by cache key (the newest one for each key)."""
        if not keys:
            return {}
        found: dict[str, CachedResult] = {}
        with self._store.session() as session:
            for start in range(0, len(keys), 500):
                rows = session.scalars(
                    select(EvalResultRow)
                    .where(EvalResultRow.cache_key.in_(keys[start : start + 500]), EvalResultRow.error.is_(None))
                    .order_by(EvalResultRow.created_at.desc())
                ).all()
                for row in rows:
                    if row.cache_key in found:
                        continue
                    example = examples[row.cache_key]
                    found[row.cache_key] = CachedResult(_sample(row, example), row.scores)
        return found

    def record(
        self,
        experiment_id: str,
        position: int,
        key: str,
        sample: Sample,
        scores: dict[str, Score],
        specs: dict[str, Any],
        *,
        cached: bool,
    ) -> None:
        with self._store.session() as session:
            session.merge(
                EvalResultRow(
                    experiment_id=experiment_id,
                    example_id=sample.example.id,
                    position=position,
                    cache_key=key,
                    input=sample.example.input,
                    output=sample.output,
                    contexts=[c.__dict__ for c in sample.contexts],
                    scores={
                        name: {
                            "value": s.value,
                            "error": s.error,
                            "skipped": s.skipped,
                            "details": s.details,
                            "spec": specs.get(name),
                        }
                        for name, s in scores.items()
                    },
                    trace_id=sample.trace_id,
                    latency_ms=sample.latency_ms,
                    cost_usd=sample.cost_usd,
                    input_tokens=sample.input_tokens,
                    output_tokens=sample.output_tokens,
                    abstained=sample.abstained,
                    error=sample.error,
                    cached=cached,
                    created_at=datetime.now(UTC),
                )
            )

    def finish(self, experiment_id: str, status: str = "finished") -> None:
        with self._store.session() as session:
            row = session.get(EvalExperimentRow, experiment_id)
            if row is None:
                raise ExperimentNotFoundError(f"no experiment {experiment_id!r}")
            row.status, row.finished_at = status, datetime.now(UTC)

    def get(self, experiment_id: str) -> ExperimentRecord:
        with self._store.session() as session:
            row = session.get(EvalExperimentRow, experiment_id)
            if row is None:
                raise ExperimentNotFoundError(f"no experiment {experiment_id!r}")
            results = session.scalars(
                select(EvalResultRow)
                .where(EvalResultRow.experiment_id == experiment_id)
                .order_by(EvalResultRow.position)
            ).all()
            return _record(row, results)

    def latest(self, name: str, *, dataset: str | None = None, status: str = "finished") -> ExperimentRecord:
        """The newest experiment of config ``name`` (on ``dataset``) with ``status``."""
        with self._store.session() as session:
            query = select(EvalExperimentRow.id).where(
                EvalExperimentRow.name == name, EvalExperimentRow.status == status
            )
            if dataset is not None:
                query = query.where(EvalExperimentRow.dataset == dataset)
            found = session.scalars(query.order_by(EvalExperimentRow.created_at.desc()).limit(1)).first()
        if found is None:
            raise ExperimentNotFoundError(f"no {status} experiment named {name!r}")
        return self.get(found)

    def list_experiments(self, *, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self._store.session() as session:
            query = select(EvalExperimentRow).order_by(EvalExperimentRow.created_at.desc()).limit(limit)
            if name is not None:
                query = query.where(EvalExperimentRow.name == name)
            return [
                {
                    "id": r.id,
                    "name": r.name,
                    "dataset": r.dataset,
                    "dataset_version": r.dataset_version,
                    "status": r.status,
                    "created_at": r.created_at.isoformat(),
                    "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                    "metrics": list(r.metrics),
                }
                for r in session.scalars(query).all()
            ]


def _sample(row: EvalResultRow, example: Example) -> Sample:
    return Sample(
        example,
        row.output,
        contexts=tuple(RetrievedContext(**c) for c in row.contexts),
        latency_ms=row.latency_ms,
        cost_usd=row.cost_usd,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        abstained=row.abstained,
        error=row.error,
        trace_id=row.trace_id,
    )


def stored_score(name: str, stored: dict[str, Any]) -> Score:
    """A score as `ExperimentStore.record` stored it."""
    value = stored.get("value")
    error = stored.get("error") or (None if value is not None else "no value recorded")
    return Score(name, value, error, stored.get("details") or {}, bool(stored.get("skipped")))


def _record(row: EvalExperimentRow, results: Sequence[EvalResultRow]) -> ExperimentRecord:
    items = [
        ItemResult(
            example_id=r.example_id,
            input=r.input,
            output=r.output,
            scores={name: stored_score(name, s) for name, s in r.scores.items()},
            trace_id=r.trace_id,
            latency_ms=r.latency_ms,
            cost_usd=r.cost_usd,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            error=r.error,
            cached=r.cached,
        )
        for r in results
    ]
    return ExperimentRecord(
        id=row.id,
        name=row.name,
        dataset=row.dataset,
        dataset_version=row.dataset_version,
        config=row.config,
        config_hash=row.config_hash,
        status=row.status,
        created_at=row.created_at,
        finished_at=row.finished_at,
        items=items,
        directions={name: bool(spec.get("higher_is_better", True)) for name, spec in row.metrics.items()},
    )
