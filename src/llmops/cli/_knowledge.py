"""``llmops ingest``, ``llmops sources``, ``llmops index`` and ``llmops search``: the knowledge base from a terminal."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmops.cli._common import User, actor, console, errors, open_platform
from llmops.knowledge import IngestBusyError, IngestReport

__all__ = ["index_app", "ingest", "search", "sources_app"]

sources_app = typer.Typer(help="Registered sources: folders, globs, files and URLs that ingestion reads.")
index_app = typer.Typer(help="Index snapshots: list, show, diff, roll back.")


def ingest(
    locations: Annotated[
        list[str] | None,
        typer.Argument(help="folders, files, globs or URLs to register and ingest (default: every registered source)"),
    ] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="parse, chunk and embed on this Ray cluster")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="processes that parse, chunk and embed: 0, one per CPU when the run is large enough; 1, this "
            "process; N, N processes (default: the knowledge.ingest_workers setting); with --ray, Ray workers",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="the project the given locations' documents belong to")
    ] = None,
    user: User = None,
) -> None:
    """Ingest documents: add new ones, re-process changed ones, remove deleted ones. A killed run resumes."""
    with open_platform() as platform:
        metadata = None
        if project is not None:
            if not locations:
                errors.print("[red]--project applies to the locations given:[/] name the folders, files or URLs")
                raise typer.Exit(2)
            if not platform.access.projects.exists(project):
                errors.print(f"[red]no project {project!r}:[/] create it first (llmops projects create {project})")
                raise typer.Exit(2)
            if project != platform.access.default_project:
                metadata = {"project": project}
        processor = None
        if ray is not None:
            from llmops.knowledge._ray import ray_processor_from_settings

            processor = ray_processor_from_settings(ray, platform, **({"workers": workers} if workers else {}))
        if not locations and not platform.knowledge.sources.list():
            errors.print("[red]nothing to ingest:[/] give a folder, file, glob or URL (no sources are registered)")
            raise typer.Exit(2)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=errors,
            disable=as_json,
        )
        try:
            with progress as bar:
                task = bar.add_task("ingesting", total=None)

                def step(done: int, total: int, _uri: str, _status: str) -> None:
                    bar.update(task, completed=done, total=total)

                report = platform.knowledge.ingest(
                    locations or None,
                    on_progress=step,
                    processor=processor,
                    workers=None if processor is not None else workers,
                    metadata=metadata,
                    actor=actor(user),
                )
        except IngestBusyError as exc:
            errors.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        _print_report(report)
    if report.failed:
        raise typer.Exit(1)


def _print_report(report: IngestReport) -> None:
    table = Table("result", "documents")
    for label, count in (
        ("added", len(report.added)),
        ("updated", len(report.updated)),
        ("unchanged", len(report.unchanged)),
        ("removed", len(report.removed)),
        ("skipped", len(report.skipped)),
        ("failed", len(report.failed)),
    ):
        table.add_row(label, str(count))
    console.print(table)
    resumed = " (resumed an interrupted run)" if report.resumed else ""
    where = f" in {report.workers} worker processes" if report.processor == "LocalPoolProcessor" else ""
    console.print(
        f"{report.chunks_written} chunks written ({report.chunks_embedded} embedded, the rest from the cache) in "
        f"{report.seconds:.2f} s{where}; index snapshot {report.snapshot_id}{resumed}"
    )
    if report.full_rebuild:
        console.print(f"every document was re-processed: {report.full_rebuild}")
    for duplicate in report.near_duplicates:
        console.print(
            f"[yellow]near duplicate[/] {duplicate.source} ≈ {duplicate.duplicate_of} "
            f"(similarity {duplicate.similarity:.2f})",
            highlight=False,
        )
    for source in report.removed:
        console.print(f"removed {source}", highlight=False)
    for source, reason in report.failed:
        errors.print(f"[red]failed[/] {source}: {reason}", highlight=False)


def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("-k", help="how many chunks")] = 5,
    mode: Annotated[str, typer.Option(help="dense, keyword or hybrid")] = "hybrid",
    where: Annotated[str | None, typer.Option("--filter", help='metadata filter as JSON: {"language": "en"}')] = None,
    snapshot: Annotated[int | None, typer.Option(help="search this snapshot (default: the newest)")] = None,
    mmr: Annotated[float | None, typer.Option(help="MMR lambda (diversity), 0..1")] = None,
    reranker: Annotated[str | None, typer.Option(help="a configured reranker's name")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search the knowledge base without generating an answer."""
    if mode not in ("dense", "keyword", "hybrid"):
        errors.print(f"[red]--mode is dense, keyword or hybrid, not {mode!r}[/]")
        raise typer.Exit(2)
    try:
        filter_spec: Any = json.loads(where) if where else None
    except json.JSONDecodeError as exc:
        errors.print(f"[red]--filter is not JSON:[/] {exc}")
        raise typer.Exit(2) from exc
    with open_platform() as platform:
        hits = platform.knowledge.search(
            query,
            k=k,
            mode=mode,  # type: ignore[arg-type]
            where=filter_spec,
            snapshot=snapshot,
            mmr_lambda=mmr,
            reranker=reranker,
        )
        searched = platform.knowledge.loaded_snapshot
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "snapshot": searched,
                    "hits": [
                        {
                            "chunk_id": h.chunk_id,
                            "source": h.source,
                            "heading": h.heading,
                            "page": h.page,
                            "score": h.score,
                            "similarity": h.similarity,
                            "text": h.text,
                        }
                        for h in hits
                    ],
                }
            )
        )
        return
    table = Table("score", "similarity", "source", "section", "text", title=f"snapshot {searched}")
    for hit in hits:
        where_in = hit.heading or (f"page {hit.page}" if hit.page else "")
        similarity = f"{hit.similarity:.3f}" if hit.similarity is not None else ""
        table.add_row(f"{hit.score:.4f}", similarity, hit.source.rsplit("/", 1)[-1], where_in, hit.text[:100])
    console.print(table)


@sources_app.command("list")
def sources_list() -> None:
    """Registered sources."""
    with open_platform() as platform:
        rows = platform.knowledge.sources.list()
    table = Table("id", "kind", "location", "registered")
    for row in rows:
        table.add_row(str(row.id), row.kind, row.location, row.created_at.isoformat(timespec="seconds"))
    console.print(table)


@sources_app.command("add")
def sources_add(location: Annotated[str, typer.Argument(help="a folder, file, glob or http(s) URL")]) -> None:
    """Register a source (ingested by the next `llmops ingest`)."""
    with open_platform() as platform:
        row = platform.knowledge.sources.add(location)
    console.print(f"source {row.id}: {row.kind} {row.location}", highlight=False)


@sources_app.command("remove")
def sources_remove(location: Annotated[str, typer.Argument(help="the registered location")]) -> None:
    """Unregister a source; its documents leave the index on the next `llmops ingest` over all sources."""
    with open_platform() as platform:
        if not platform.knowledge.sources.remove(location):
            errors.print(f"[red]no source {location}[/]", highlight=False)
            raise typer.Exit(1)
    console.print(f"removed source {location}", highlight=False)


@index_app.command("list")
def index_list(limit: Annotated[int, typer.Option(help="how many, newest first")] = 20) -> None:
    """Snapshots, newest first."""
    with open_platform() as platform:
        snapshots = platform.knowledge.snapshots.list(limit=limit)
        served = platform.knowledge.served_snapshot()
    table = Table("id", "", "kind", "status", "created", "documents", "chunks", "model", "chunking", "changes")
    for s in snapshots:
        changes = ", ".join(f"{k} {v}" for k, v in s.stats.items() if k in ("added", "changed", "removed") and v)
        if s.kind == "rollback":
            changes = f"rolled back to {s.stats.get('rolled_back_to')}"
        table.add_row(
            str(s.id),
            "*" if s.id == served else "",
            s.kind,
            s.status,
            s.created_at.isoformat(timespec="seconds"),
            str(s.documents),
            str(s.chunks),
            s.embedding_model,
            s.chunking_config_id or "",
            changes,
        )
    console.print(table)


@index_app.command("show")
def index_show(snapshot: Annotated[int, typer.Argument()]) -> None:
    """One snapshot as JSON."""
    with open_platform() as platform:
        info = platform.knowledge.snapshots.get(snapshot)
    console.print_json(json.dumps(info.to_dict(), default=str))


@index_app.command("diff")
def index_diff(
    base: Annotated[int, typer.Argument(help="snapshot A")],
    target: Annotated[int, typer.Argument(help="snapshot B")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Documents added, changed and removed from snapshot A to snapshot B."""
    with open_platform() as platform:
        diff = platform.knowledge.snapshots.diff(base, target)
    if as_json:
        console.print_json(json.dumps(diff.to_dict()))
        return
    for label, items in (("added", diff.added), ("changed", diff.changed), ("removed", diff.removed)):
        for item in items:
            console.print(f"{label:8} {item}", highlight=False)
    console.print(f"{len(diff.added)} added, {len(diff.changed)} changed, {len(diff.removed)} removed")


@index_app.command("rollback")
def index_rollback(
    snapshot: Annotated[int, typer.Argument(help="the snapshot whose content to return to")],
    user: Annotated[str | None, typer.Option("--user", envvar="LLMOPS_USER")] = None,
) -> None:
    """Return the index to an earlier snapshot's content (recorded as a new snapshot; history is kept)."""
    with open_platform() as platform:
        try:
            new_id = platform.knowledge.rollback(snapshot, actor=actor(user))
        except IngestBusyError as exc:
            errors.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
    console.print(f"index rolled back to snapshot {snapshot}'s content as snapshot {new_id}")
