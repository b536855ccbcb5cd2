"""``llmops eval dataset``: versioned datasets from files, from production traces and from synthetic generation,
and the review queue that candidates pass before they enter a version."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from llmops._platform import Platform
from llmops.cli._common import User, actor, console, errors, open_platform
from llmops.evaluation import (
    DatasetFileError,
    DatasetNotFoundError,
    examples_from_traces,
    load_examples,
    synthesize_examples,
)

__all__ = ["dataset_app"]

dataset_app = typer.Typer(help="Versioned evaluation datasets and their review queue.")


@dataset_app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="dataset name")],
    file: Annotated[Path, typer.Argument(help="JSONL, JSON, CSV or YAML examples")],
    message: Annotated[str, typer.Option("-m", "--message")] = "",
    user: User = None,
) -> None:
    """Save the file's examples as the dataset's next version (nothing changes when the content is identical)."""
    try:
        examples = load_examples(file)
    except DatasetFileError as exc:
        errors.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from exc
    with open_platform() as platform:
        before = {v["version"] for v in _versions(platform, name)}
        version = platform.datasets.save(name, examples, author=actor(user), message=message, origin=str(file))
    state = "unchanged" if version.version in before else "saved"
    console.print(f"{name} version {version.version}: {len(version.examples)} examples ({state})")


def _versions(platform: Platform, name: str) -> list[dict[str, Any]]:
    try:
        return platform.datasets.versions(name)
    except DatasetNotFoundError:
        return []


@dataset_app.command("list")
def list_datasets(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Datasets, their newest version and how many drafts wait for review."""
    with open_platform() as platform:
        rows = platform.datasets.list_datasets()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("dataset", "latest version", "pending drafts", "description")
    for row in rows:
        table.add_row(row["name"], str(row["latest_version"] or "-"), str(row["pending_drafts"]), row["description"])
    console.print(table)


@dataset_app.command("show")
def show(
    name: str,
    version: Annotated[int | None, typer.Option("--version", "-v")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A version's examples (the newest by default) and the version history."""
    with open_platform() as platform:
        found = platform.datasets.get(name, version)
        history = platform.datasets.versions(name)
    if as_json:
        console.print_json(json.dumps({**found.info(), "examples": [e.to_dict() for e in found.examples]}))
        return
    console.print(f"[bold]{name}[/] version {found.version} of {len(history)} ({found.content_hash[:12]})")
    table = Table("id", "input", "expected", "facts", "sources", "tags")
    for example in found.examples:
        table.add_row(
            example.id,
            example.input[:80],
            (example.expected or ("(refusal)" if not example.answerable else ""))[:60],
            str(len(example.facts)),
            ", ".join(s.source for s in example.sources)[:40],
            ", ".join(example.tags),
        )
    console.print(table)


@dataset_app.command("drafts")
def drafts(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Candidate examples waiting for review."""
    with open_platform() as platform:
        pending = platform.datasets.drafts(name)
    if as_json:
        console.print_json(json.dumps([{"id": d.id, "origin": d.origin, **d.example.to_dict()} for d in pending]))
        return
    table = Table("draft", "origin", "input", "expected", "sources")
    for draft in pending:
        table.add_row(
            str(draft.id),
            draft.origin,
            draft.example.input[:80],
            (draft.example.expected or "")[:60],
            ", ".join(s.source for s in draft.example.sources)[:40],
        )
    console.print(table)


def _ids(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"draft ids are numbers separated by commas, not {value!r}") from exc


@dataset_app.command("review")
def review(
    name: str,
    accept: Annotated[str, typer.Option(help="draft ids to accept, comma-separated")] = "",
    reject: Annotated[str, typer.Option(help="draft ids to reject, comma-separated")] = "",
    accept_all: Annotated[bool, typer.Option("--accept-all")] = False,
    note: Annotated[str, typer.Option("-m", "--note")] = "",
    user: User = None,
) -> None:
    """Accept or reject drafts; the accepted ones make the dataset's next version."""
    with open_platform() as platform:
        accepted = _ids(accept)
        if accept_all:
            accepted = [d.id for d in platform.datasets.drafts(name)]
        version = platform.datasets.review(name, accept=accepted, reject=_ids(reject), by=actor(user), note=note)
    if version is None:
        console.print("no draft accepted; no new version")
    else:
        console.print(f"{name} version {version.version}: {len(version.examples)} examples")


@dataset_app.command("from-traces")
def from_traces(
    name: str,
    app: Annotated[str | None, typer.Option(help="only this RAG app's requests")] = None,
    max_grounding: Annotated[float | None, typer.Option(help="only answers with a grounding score below this")] = None,
    topic: Annotated[str | None, typer.Option(help="only questions containing all these words")] = None,
    since_hours: Annotated[float | None, typer.Option(help="only the last N hours")] = None,
    negative_feedback: Annotated[
        bool, typer.Option(help="only requests that got a thumbs down, a low rating, a correction or a flag")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
) -> None:
    """Queue production questions that match the filters as drafts (review them before they enter a version)."""
    since = datetime.now(UTC) - timedelta(hours=since_hours) if since_hours is not None else None
    with open_platform() as platform:
        request_ids = platform.feedback.negative_request_ids(app=app, since=since) if negative_feedback else None
        traces = platform.traces.select_answers(
            app=app, max_grounding=max_grounding, topic=topic, since=since, limit=limit, request_ids=request_ids
        )
        ids = platform.datasets.add_drafts(name, examples_from_traces(traces), origin="traces")
    console.print(f"queued {len(ids)} draft(s) for {name}; review with `llmops eval dataset review {name}`")


@dataset_app.command("synth")
def synth(
    name: str,
    model: Annotated[str | None, typer.Option(help="the generating model (stronger than the bundled one)")] = None,
    count: Annotated[int, typer.Option("-n", min=1, max=1000)] = 20,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Generate question-answer-source triples from indexed chunks, queued as drafts for review."""
    with open_platform() as platform:
        chosen = model or platform.metric_deps.judge_model
        if chosen is None:
            raise LookupError("no chat model is configured to generate with")
        chunks = platform.knowledge.sample_chunks(count, seed=seed)
        if not chunks:
            raise LookupError("the knowledge base has no chunks yet: run `llmops ingest` first")
        report = asyncio.run(synthesize_examples(chunks, platform.gateway, chosen))
        ids = platform.datasets.add_drafts(name, report.examples, origin=f"synthetic:{chosen}")
    dropped = ", ".join(f"{n} {reason}" for reason, n in report.dropped.items()) or "none"
    console.print(f"queued {len(ids)} of {report.attempted} generated draft(s) for {name} (dropped: {dropped}); "
                  f"review with `llmops eval dataset review {name}`")  # fmt: skip
