"""Running experiments: a dataset version through a target, every item scored and stored as it completes.

`Evaluator.run` resolves the dataset to an immutable version and the target to exact versions, then answers the
items ``concurrency`` at a time. Items already in an unfinished experiment of the same configuration are skipped
(resume); items whose output an earlier experiment produced for the same configuration and content are reused
(cache) and only re-scored where the metric changed. `Evaluator.gate` runs a candidate and its baseline and applies
the gate (`llmops.evaluation.gate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from llmops.evaluation._compare import compare_experiments
from llmops.evaluation._config import EvalConfig, MetricSpec, TargetSpec
from llmops.evaluation._dataset_files import load_examples
from llmops.evaluation._datasets import DatasetRegistry, DatasetVersion
from llmops.evaluation._experiments import ExperimentStore, cache_key, config_hash, stored_score
from llmops.evaluation._gate import evaluate_gate
from llmops.evaluation._metrics import build_metric
from llmops.evaluation._results import ExperimentComparison, ExperimentRecord, GateResult
from llmops.evaluation._targets import TargetDeps, build_target
from llmops.evaluation._types import AsyncMetric, Metric, MetricDeps, Sample, Score, ScoringContext, is_async_metric

__all__ = ["Evaluator", "Progress", "score_samples"]


@dataclass
class Progress:
    """Where a run stands, passed to the progress callback after every item."""

    experiment_id: str
    total: int
    done: int = 0
    cached: int = 0
    errors: int = 0
    resumed: int = 0


@dataclass(frozen=True)
class _BuiltMetric:
    spec: MetricSpec
    metric: Metric | AsyncMetric

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def signature(self) -> dict[str, Any]:
        return {"metric": self.spec.name, "params": self.spec.params}


async def score_samples(
    metrics: Sequence[Metric | AsyncMetric], samples: Sequence[Sample], ctx: ScoringContext
) -> list[dict[str, Score]]:
    """Every metric on every sample; a metric that raises scores the batch as errored (the run goes on)."""
    out: list[dict[str, Score]] = [{} for _ in samples]
    if not samples:
        return out
    for metric in metrics:
        try:
            if is_async_metric(metric):
                scores = await metric.score(samples, ctx)
            else:
                scores = await asyncio.to_thread(cast(Metric, metric).score, samples, ctx)
            if len(scores) != len(samples):
                raise RuntimeError(f"returned {len(scores)} scores for {len(samples)} samples")
        except Exception as exc:
            scores = [Score.failed(metric.name, f"the metric failed: {type(exc).__name__}: {exc}") for _ in samples]
        for row, score in zip(out, scores, strict=True):
            row[metric.name] = score
    return out


class Evaluator:
    """Datasets, experiments and gates, wired to the platform's components (`Platform.evaluator`)."""

    def __init__(
        self,
        datasets: DatasetRegistry,
        experiments: ExperimentStore,
        target_deps: TargetDeps,
        metric_deps: MetricDeps,
    ) -> None:
        self.datasets = datasets
        self.experiments = experiments
        self._target_deps = target_deps
        self._metric_deps = metric_deps

    def dataset_for(self, config: EvalConfig, *, author: str) -> DatasetVersion:
        """The dataset version a config names; a file is saved as a version first (a no-op when unchanged)."""
        ref = config.dataset
        if ref.file is not None:
            examples = load_examples(ref.file)
            name = ref.name or ref.file.stem
            return self.datasets.save(name, examples, author=author, origin=str(ref.file), message="from file")
        assert ref.name is not None
        return self.datasets.get(ref.name, ref.version)

    def build_metrics(self, specs: Sequence[MetricSpec], judge_model: str | None = None) -> list[_BuiltMetric]:
        deps = self._metric_deps
        if judge_model is not None:
            deps = MetricDeps(deps.embedder, deps.grounding, deps.gateway, deps.prompts, judge_model)
        built = []
        for spec in specs:
            metric = build_metric(spec.name, spec.params, deps)
            if spec.as_name:
                metric.name = spec.as_name  # the scores' name; the metric's own default is its kind
            built.append(_BuiltMetric(spec, metric))
        return built

    async def run(
        self,
        config: EvalConfig,
        *,
        target: TargetSpec | None = None,
        author: str = "llmops",
        resume: bool = True,
        progress: Callable[[Progress], None] | None = None,
    ) -> ExperimentRecord:
        """Run ``config`` (or its dataset and metrics with another ``target``) and return the stored experiment."""
        dataset = self.dataset_for(config, author=author)
        built = self.build_metrics(config.metrics, config.judge_model)
        runner = build_target(target or config.target, self._target_deps)
        target_hash = config_hash(runner.resolved)
        metric_specs = {m.name: {"params": m.signature, "higher_is_better": m.metric.higher_is_better} for m in built}
        experiment_id = self.experiments.start(
            name=config.name,
            dataset=dataset.name,
            dataset_version=dataset.version,
            config=runner.resolved,
            metrics=metric_specs,
            author=author,
            resume=resume,
        )
        done = self.experiments.done_ids(experiment_id)
        todo = [(n, e) for n, e in enumerate(dataset.examples) if e.id not in done]
        state = Progress(experiment_id, len(dataset.examples), done=len(done), resumed=len(done))
        keys = {e.id: cache_key(target_hash, e) for _, e in todo}
        cached = self.experiments.cached(list(keys.values()), {keys[e.id]: e for _, e in todo})
        ctx = ScoringContext(self._metric_deps)
        metrics = [m.metric for m in built]
        signatures = {m.name: m.signature for m in built}

        # Cached items: scores whose metric spec is unchanged are reused; the rest are scored in one batch.
        reused = [(n, e) for n, e in todo if keys[e.id] in cached]
        reused_scores: dict[str, dict[str, Score]] = {e.id: {} for _, e in reused}
        for metric in built:
            stale = []
            for _, example in reused:
                stored = cached[keys[example.id]].scores.get(metric.name)
                if stored is not None and stored.get("spec") == metric.signature:
                    reused_scores[example.id][metric.name] = stored_score(metric.name, stored)
                else:
                    stale.append(example)
            fresh = await score_samples([metric.metric], [cached[keys[e.id]].sample for e in stale], ctx)
            for example, row in zip(stale, fresh, strict=True):
                reused_scores[example.id][metric.name] = row[metric.name]
        for position, example in reused:
            self.experiments.record(
                experiment_id,
                position,
                keys[example.id],
                cached[keys[example.id]].sample,
                reused_scores[example.id],
                signatures,
                cached=True,
            )
            state.done += 1
            state.cached += 1
            if progress is not None:
                progress(state)

        # An in-process model generates one answer at a time: more requests in flight would only queue in front of
        # it, and a queued request can run out its first-token timeout (and open the model's circuit breaker).
        local = runner.resolved.get("model", {}).get("provider") == "local"
        semaphore = asyncio.Semaphore(1 if local else config.concurrency)

        async def one(position: int, example: Any) -> None:
            async with semaphore:
                sample = await runner.run(example)
                (scores,) = await score_samples(metrics, [sample], ctx)
            await asyncio.to_thread(
                self.experiments.record, experiment_id, position, keys[example.id], sample, scores, signatures,
                cached=False,
            )  # fmt: skip
            state.done += 1
            state.errors += 1 if sample.error else 0
            if progress is not None:
                progress(state)

        # Interrupted (an exception, Ctrl-C), the experiment stays "running": the next run of this configuration
        # resumes it.
        await asyncio.gather(*(one(n, e) for n, e in todo if keys[e.id] not in cached))
        self.experiments.finish(experiment_id)
        return self.experiments.get(experiment_id)

    async def baseline_for(
        self,
        config: EvalConfig,
        candidate: ExperimentRecord,
        *,
        author: str,
        progress: Callable[[Progress], None] | None,
    ) -> ExperimentRecord | None:
        spec = config.baseline
        if spec is None:
            return None
        if spec.experiment is not None:
            return self.experiments.get(spec.experiment)
        if spec.name is not None:
            return self.experiments.latest(spec.name, dataset=candidate.dataset)
        assert spec.target is not None
        target = config.target.merged(spec.target)
        baseline_config = config.model_copy(update={"name": f"{config.name}:baseline"})
        return await self.run(baseline_config, target=target, author=author, progress=progress)

    async def gate(
        self,
        config: EvalConfig,
        *,
        baseline_experiment: str | None = None,
        author: str = "llmops",
        progress: Callable[[Progress], None] | None = None,
    ) -> GateResult:
        """Run the candidate (and the baseline when it is a target), compare, and apply thresholds and regressions."""
        candidate = await self.run(config, author=author, progress=progress)
        if baseline_experiment is not None:
            baseline: ExperimentRecord | None = self.experiments.get(baseline_experiment)
        else:
            baseline = await self.baseline_for(config, candidate, author=author, progress=progress)
        comparison = None
        if baseline is not None:
            comparison = compare_experiments(baseline, candidate, alpha=config.gate.alpha)
        thresholds = {
            built.name: built.spec.threshold
            for built in self.build_metrics(config.metrics, config.judge_model)
            if built.spec.threshold is not None
        }
        return evaluate_gate(candidate, thresholds, comparison, config.gate)

    def compare(self, baseline_id: str, candidate_id: str, *, alpha: float = 0.05) -> ExperimentComparison:
        return compare_experiments(self.experiments.get(baseline_id), self.experiments.get(candidate_id), alpha=alpha)
