"""``llmops eval``: measure the platform against labelled datasets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from llmops.cli._common import User, actor, console, errors, open_platform
from llmops.cli._datasets import dataset_app
from llmops.evaluation import (
    EvalConfigError,
    GateResult,
    MetricConfigError,
    Progress,
    QuerySetError,
    RetrievalReport,
    TargetError,
    evaluate_gate,
    evaluate_retrieval,
    human_agreement,
    load_eval_config,
    load_query_set,
    render_markdown,
    write_reports,
)

__all__ = ["eval_app"]

eval_app = typer.Typer(help="Evaluate retrieval and answers against labelled datasets.")
eval_app.add_typer(dataset_app, name="dataset")

_MODES: dict[str, dict[str, Any]] = {
    "dense": {"mode": "dense"},
    "keyword": {"mode": "keyword"},
    "hybrid": {"mode": "hybrid"},
    "hybrid+weighted": {"mode": "hybrid", "fusion": "weighted"},
    "hybrid+mmr": {"mode": "hybrid", "mmr_lambda": 0.7},
}


@eval_app.command("retrieval")
def retrieval(
    queries: Annotated[Path, typer.Argument(help="JSONL: {query, relevant: [{source, contains}], tag}")] = Path(
        "samples/handbook-queries.jsonl"
    ),
    k: Annotated[int, typer.Option("-k", help="cut-off for recall and nDCG")] = 5,
    modes: Annotated[str, typer.Option(help=f"comma-separated, of: {', '.join(_MODES)}, hybrid+rerank")] = (
        "dense,keyword,hybrid"
    ),
    reranker: Annotated[str | None, typer.Option(help="the configured reranker used by hybrid+rerank")] = None,
    snapshot: Annotated[int | None, typer.Option(help="evaluate this snapshot (default: the newest)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recall@k, MRR and nDCG@k of each retrieval mode over a query set with known relevant passages."""
    try:
        query_set = load_query_set(queries)
    except QuerySetError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in _MODES and m != "hybrid+rerank"]
    if unknown:
        errors.print(f"[red]unknown mode {', '.join(unknown)}; use {', '.join(_MODES)}, hybrid+rerank[/]")
        raise typer.Exit(2)
    reports: list[RetrievalReport] = []
    with open_platform() as platform:
        knowledge = platform.knowledge
        if "hybrid+rerank" in wanted and reranker is None:
            if not knowledge.rerankers:
                errors.print("[red]hybrid+rerank needs a reranker: configure knowledge.rerankers (see README)[/]")
                raise typer.Exit(2)
            reranker = next(iter(knowledge.rerankers))
        for mode in wanted:
            options = dict(_MODES.get(mode, {"mode": "hybrid", "reranker": reranker}))
            reports.append(
                evaluate_retrieval(
                    mode,
                    query_set,
                    lambda q, o=options: knowledge.search(q, k=k, snapshot=snapshot, **o),  # type: ignore[misc]
                    k=k,
                )
            )
        searched = knowledge.loaded_snapshot
    if as_json:
        console.print_json(json.dumps({"snapshot": searched, "reports": [r.to_dict() for r in reports]}))
        return
    table = Table(
        "mode", "queries", f"recall@{k}", "MRR", f"nDCG@{k}", "hit rate", "p50 ms", title=f"snapshot {searched}"
    )
    for report in reports:
        table.add_row(
            report.name,
            str(report.queries),
            f"{report.recall_at_k:.3f}",
            f"{report.mrr:.3f}",
            f"{report.ndcg_at_k:.3f}",
            f"{report.hit_rate:.3f}",
            f"{report.p50_ms:.1f}",
        )
    console.print(table)


@eval_app.command("run")
def run(
    config_file: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="what to run, how to score and gate it")],
    gate: Annotated[bool, typer.Option("--gate", help="exit 1 when a threshold fails or a metric regresses")] = False,
    baseline: Annotated[str | None, typer.Option(help="compare with this experiment id (overrides the config)")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="write summary.md and report.html here")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run of the same configuration")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    user: User = None,
) -> None:
    """Run a dataset through a configuration, store every item's output and scores, and (with --gate) gate it."""
    try:
        config = load_eval_config(config_file)
    except EvalConfigError as exc:
        errors.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from exc
    with open_platform() as platform, _progress() as show:
        evaluator = platform.evaluator
        try:
            if gate or baseline or config.baseline:
                result = asyncio.run(
                    evaluator.gate(config, baseline_experiment=baseline, author=actor(user), progress=show)
                )
            else:
                record = asyncio.run(evaluator.run(config, author=actor(user), resume=resume, progress=show))
                result = evaluate_gate(record, {}, None, config.gate)
        except (EvalConfigError, MetricConfigError, TargetError) as exc:
            errors.print(f"[red]{exc}[/]", highlight=False)
            raise typer.Exit(2) from exc
    directory = report_dir or config.report_dir
    written = write_reports(result, directory) if directory is not None else None
    if as_json:
        console.print_json(json.dumps(_gate_json(result)))
    else:
        console.print(render_markdown(result), markup=False, highlight=False)
        if written:
            console.print(f"reports: {written[0]} {written[1]}")
    if gate and not result.passed:
        raise typer.Exit(1)


@eval_app.command("compare")
def compare(
    baseline: Annotated[str, typer.Argument(help="baseline experiment id")],
    candidate: Annotated[str, typer.Argument(help="candidate experiment id")],
    alpha: Annotated[float, typer.Option(min=0.001, max=0.5)] = 0.05,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Item-by-item comparison: mean difference, paired bootstrap interval, p-value and verdict per metric."""
    with open_platform() as platform:
        comparison = platform.evaluator.compare(baseline, candidate, alpha=alpha)
    rows = [m.to_dict() for m in comparison.metrics]
    if as_json:
        console.print_json(json.dumps({"baseline": baseline, "candidate": candidate, "metrics": rows}))
        return
    table = Table("metric", "pairs", "baseline", "candidate", "difference", f"{1 - alpha:.0%} CI", "p", "verdict")
    for m in comparison.metrics:
        table.add_row(
            m.metric,
            str(m.pairs),
            _fmt(m.baseline_mean),
            _fmt(m.candidate_mean),
            f"{m.difference:+.3f}",
            f"[{m.ci_low:+.3f}, {m.ci_high:+.3f}]",
            f"{m.p_value:.4f}",
            "regressed" if m.regressed else "improved" if m.improved else "no significant change",
        )
    console.print(table)


@eval_app.command("experiments")
def experiments(
    name: Annotated[str | None, typer.Option(help="only experiments of this config name")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent experiments, newest first."""
    with open_platform() as platform:
        rows = platform.evaluator.experiments.list_experiments(name=name, limit=limit)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("id", "name", "dataset", "status", "created", "metrics")
    for row in rows:
        table.add_row(
            row["id"],
            row["name"],
            f"{row['dataset']}@{row['dataset_version']}",
            row["status"],
            row["created_at"][:19],
            ", ".join(row["metrics"]),
        )
    console.print(table)


@eval_app.command("show")
def show(
    experiment: Annotated[str, typer.Argument(help="experiment id")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """An experiment's configuration, metric means and items."""
    with open_platform() as platform:
        record = platform.evaluator.experiments.get(experiment)
    agreement = {name: a.__dict__ for name, a in human_agreement(record.items).items()}
    if as_json:
        console.print_json(json.dumps({**record.to_dict(), "human_agreement": agreement}))
        return
    summaries = {m: record.summary(m) for m in record.metrics()}
    console.print(f"[bold]{record.id}[/] {record.name} on {record.dataset}@{record.dataset_version}: {record.status}")
    table = Table("metric", "mean", "scored", "errors")
    for metric, summary in summaries.items():
        table.add_row(metric, _fmt(summary.mean), str(summary.scored), str(summary.errors))
    console.print(table)
    console.print(record.totals())
    for name, found in agreement.items():
        console.print(f"{name} vs human labels: {found}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _gate_json(result: GateResult) -> dict[str, Any]:
    candidate = result.candidate
    return {
        "passed": result.passed,
        "failures": result.failures,
        "experiment": candidate.id,
        "dataset": f"{candidate.dataset}@{candidate.dataset_version}",
        "totals": candidate.totals(),
        "metrics": {m: candidate.summary(m).__dict__ for m in candidate.metrics()},
        "thresholds": [
            {"metric": t.metric, "threshold": t.threshold, "value": t.value, "passed": t.passed}
            for t in result.thresholds
        ],
        "baseline": result.comparison.baseline.id if result.comparison else None,
        "comparison": [m.to_dict() for m in result.comparison.metrics] if result.comparison else [],
    }


@contextmanager
def _progress() -> Iterator[Callable[[Progress], None]]:
    """A progress bar on stderr (so --json output stays clean), fed by the runner's callback."""
    with RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def show(state: Progress) -> None:
            task = tasks.get(state.experiment_id)
            if task is None:
                task = tasks[state.experiment_id] = bar.add_task(state.experiment_id, total=state.total, detail="")
            detail = f"cached {state.cached}, errors {state.errors}" + (
                f", resumed {state.resumed}" if state.resumed else ""
            )
            bar.update(task, completed=state.done, detail=detail)

        yield show
