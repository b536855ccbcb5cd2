"""The ``llmops`` command. Each command builds one `Platform` from settings and only wires it to the terminal."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated

import typer
from rich.table import Column, Table

from llmops._settings import Settings
from llmops.cli._access import keys_app, projects_app, roles_app, users_app
from llmops.cli._common import console, errors, open_platform, with_platform
from llmops.cli._compliance import evidence_pack, maturity
from llmops.cli._costs import costs_app
from llmops.cli._evaluation import eval_app
from llmops.cli._gateway import gateway_app
from llmops.cli._guardrails import guardrails_app
from llmops.cli._knowledge import index_app, ingest, search, sources_app
from llmops.cli._lineage import explain, replay
from llmops.cli._loop import (
    audit_app,
    drift_app,
    feedback_app,
    metrics_app,
    reviews_app,
    runbooks_app,
    triggers_app,
)
from llmops.cli._privacy import privacy_app
from llmops.cli._prompts import prompts_app

__all__ = ["app", "main"]

app = typer.Typer(help="llmops: the production loop for LLM applications.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
app.add_typer(roles_app, name="roles")
app.add_typer(projects_app, name="projects")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(gateway_app, name="gateway")
app.add_typer(guardrails_app, name="guardrails")
app.add_typer(sources_app, name="sources")
app.add_typer(index_app, name="index")
app.add_typer(eval_app, name="eval")
app.add_typer(feedback_app, name="feedback")
app.add_typer(triggers_app, name="triggers")
app.add_typer(runbooks_app, name="runbooks")
app.add_typer(reviews_app, name="reviews")
app.add_typer(drift_app, name="drift")
app.add_typer(metrics_app, name="metrics")
app.add_typer(audit_app, name="audit")
app.add_typer(costs_app, name="costs")
app.add_typer(privacy_app, name="privacy")
app.command()(explain)
app.command()(replay)
app.command()(maturity)
app.command("evidence-pack")(evidence_pack)
app.command()(ingest)
app.command()(search)

_TRACE_DETAILS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "llmops.ttft_ms",
    "llmops.tokens_per_s",
    "llmops.cost_usd",
    "llmops.retrieval.hits",
    "llmops.prompt.version",
)


def _warn_if_open(settings: Settings, host: str) -> None:
    """Keys off is for one person on a laptop: say so when the server is reachable from elsewhere."""
    if not settings.auth.required and host not in ("127.0.0.1", "localhost", "::1"):
        errors.print(
            f"[yellow]warning:[/] API keys are not required (auth.required: false) and {host} is reachable from "
            "other machines: anyone who reaches it acts as an admin. Set LLMOPS_AUTH__REQUIRED=true and create "
            "keys with `llmops keys create`."
        )


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="bind address (LLMOPS_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (LLMOPS_PORT)")] = None,
    workers: Annotated[int, typer.Option(help="server processes (each a replica with its own platform)")] = 1,
) -> None:
    """Serve the platform over HTTP: REST API, OpenAI-compatible /v1, web page at /."""
    import uvicorn

    from llmops.server import create_app, tune_garbage_collector, uvicorn_options

    if workers > 1:
        # Replicas share the store; limits and caches are per process unless gateway.redis_url is set.
        settings = Settings()
        bind_host, bind_port = host or settings.host, port or settings.port
        _warn_if_open(settings, bind_host)
        console.print(f"llmops serving on [bold]http://{bind_host}:{bind_port}[/] with {workers} workers")
        uvicorn.run("llmops.server:app_from_settings", factory=True, host=bind_host, port=bind_port,
                    workers=workers, log_level="info", **uvicorn_options())  # fmt: skip
        return
    with open_platform(journal_drain="process") as platform:
        settings = platform.settings
        bind_host, bind_port = host or settings.host, port or settings.port
        _warn_if_open(settings, bind_host)
        if platform.rag_apps:  # load the RAG model before the first request, not during it
            platform.gateway.count_tokens(platform.rag().config.model, "warm up")
        console.print(
            f"llmops serving on [bold]http://{bind_host}:{bind_port}[/] (models: {', '.join(platform.served_models())})"
        )
        tune_garbage_collector()
        uvicorn.run(create_app(platform), host=bind_host, port=bind_port, log_level="info", **uvicorn_options())


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question")],
    app_name: Annotated[str | None, typer.Option("--app", help="RAG app name")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole answer as JSON")] = False,
) -> None:
    """Answer a question from the knowledge base, with citations."""
    with open_platform() as platform:
        try:
            answer = asyncio.run(platform.rag(app_name).ask(question))
        finally:
            asyncio.run(platform.gateway.aclose())
    if as_json:
        console.print_json(json.dumps(answer.to_dict()))
        return
    console.print(answer.answer, markup=False, highlight=False)
    for c in answer.citations:
        where = c.heading or (f"page {c.page}" if c.page else "")
        console.print(f"  [{c.number}]{'*' if c.cited else ' '} {c.title} — {where} ({c.source}, score {c.score:.3f})",
                      markup=False, highlight=False)  # fmt: skip
    console.print(f"[dim]request {answer.request_id} · {answer.duration_ms:.0f} ms[/]")


@app.command()
def traces(
    request_id: Annotated[
        str | None, typer.Argument(help="a request id or trace id; the newest traces if omitted")
    ] = None,
    limit: Annotated[int, typer.Option(help="how many traces to list")] = 20,
) -> None:
    """List recent traces, or show one trace's spans with durations, tokens, TTFT and cost."""
    if request_id is None:
        table = Table(Column("request id", no_wrap=True), "name", "created (UTC)", "ms", "status")
        for t in with_platform(lambda p: p.traces.recent(limit)):
            created = t["created_at"][:19].replace("T", " ")
            table.add_row(t["request_id"], t["name"], created, f"{t['duration_ms']:.1f}", t["status"])
        console.print(table)
        return
    found = with_platform(lambda p: p.traces.get(request_id))
    table = Table("span", "ms", "status", "details", title=f"{found['request_id']} (trace {found['trace_id']})")
    for span in found["spans"]:
        attrs = span["attributes"]
        details = "  ".join(f"{key.rsplit('.', 1)[-1]}={attrs[key]}" for key in _TRACE_DETAILS if key in attrs)
        table.add_row("  " * span["depth"] + span["name"], f"{span['duration_ms']:.1f}", span["status"], details)
    console.print(table)


@app.command()
def models() -> None:
    """List the model names clients can use (RAG apps and gateway models)."""
    for name in with_platform(lambda p: p.served_models()):
        console.print(name)


def main() -> None:
    # llama.cpp and onnxruntime print to stderr at load; keep the terminal for llmops' own messages.
    os.environ.setdefault("ORT_LOG_SEVERITY_LEVEL", "3")
    app()
