"""``llmops eval``: measure the platform against labelled datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from llmops.cli._common import console, errors, open_platform
from llmops.evaluation import QuerySetError, RetrievalReport, evaluate_retrieval, load_query_set

__all__ = ["eval_app"]

eval_app = typer.Typer(help="Evaluate retrieval and answers against labelled datasets.")

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
