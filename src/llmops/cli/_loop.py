"""``llmops feedback|triggers|runbooks|reviews|drift|metrics|audit``: monitoring and the closed loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from rich.table import Table

from llmops.cli._common import User, actor, console, errors, open_platform

__all__ = ["audit_app", "drift_app", "feedback_app", "metrics_app", "reviews_app", "runbooks_app", "triggers_app"]

feedback_app = typer.Typer(help="Feedback on responses (thumbs, ratings, corrections, flags).")
triggers_app = typer.Typer(help="Trigger rules, their firings and approvals.")
runbooks_app = typer.Typer(help="Incident runbooks.")
reviews_app = typer.Typer(help="Items waiting for a person.")
drift_app = typer.Typer(help="Semantic drift of what users ask, and retrieval health.")
metrics_app = typer.Typer(help="Aggregates of the stored per-request metrics.")
audit_app = typer.Typer(help="The tamper-evident audit log.")


def _json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


@feedback_app.command("give")
def give_feedback(
    request_id: str,
    kind: Annotated[str, typer.Option(help="thumbs | rating | correction | flag")] = "thumbs",
    value: Annotated[str | None, typer.Option(help="thumbs: up/down; rating: 1-5")] = None,
    comment: Annotated[str | None, typer.Option()] = None,
    correction: Annotated[str | None, typer.Option()] = None,
    flag: Annotated[str | None, typer.Option()] = None,
    user: User = None,
) -> None:
    """Record feedback on the response to REQUEST_ID."""
    number: float | str | None = value
    if kind == "rating" and value is not None:
        try:
            number = float(value)
        except ValueError:
            number = value
    with open_platform() as platform:
        feedback = platform.feedback.record(
            request_id, kind=kind, value=number, comment=comment, correction=correction, flag=flag, user=actor(user)
        )
    console.print(f"recorded {feedback.id} on {request_id}")


@feedback_app.command("list")
def list_feedback(
    app: Annotated[str | None, typer.Option()] = None,
    negative: Annotated[bool, typer.Option(help="only negative feedback")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    with open_platform() as platform:
        items = platform.feedback.find(app=app, negative=True if negative else None, limit=limit)
    table = Table("when", "request", "kind", "value", "comment / correction / flag", "user")
    for f in items:
        text = f.comment or f.correction or f.flag or ""
        table.add_row(
            f.to_dict()["created_at"][:19],
            f.request_id,
            f.kind,
            "" if f.value is None else f"{f.value:g}",
            text[:80],
            f.user or "",
        )
    console.print(table)


@triggers_app.command("list")
def list_rules() -> None:
    with open_platform() as platform:
        rules = platform.triggers.rules()
    table = Table("rule", "when", "cool-down", "approval", "actions")
    for r in rules:
        table.add_row(
            r.name,
            r.when.describe(),
            f"{r.cooldown_s:g}s",
            "yes" if r.approval else "",
            ", ".join(name for name, _ in r.steps()),
        )
    console.print(table)


@triggers_app.command("add")
def add_rules(path: Path, user: User = None) -> None:
    """Save the rules in a YAML file through the API store (replacing rules of the same name)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    specs = data.get("triggers", data) if isinstance(data, dict) else data
    if not isinstance(specs, list):
        raise typer.BadParameter(f"{path}: expected a list of rules (or a 'triggers' list)")
    with open_platform() as platform:
        for spec in specs:
            rule = platform.triggers.add_rule(spec, by=actor(user))
            console.print(f"saved rule {rule.name}")


@triggers_app.command("remove")
def remove_rule(name: str, user: User = None) -> None:
    with open_platform() as platform:
        platform.triggers.remove_rule(name, by=actor(user))
    console.print(f"removed rule {name}")


@triggers_app.command("evaluate")
def evaluate() -> None:
    """Evaluate every rule now (the server does it every triggers.interval_s) and print what fired."""
    with open_platform() as platform:
        fired = platform.triggers.evaluate()
    if not fired:
        console.print("no rule fired")
    for firing in fired:
        _print_firing(firing)


@triggers_app.command("history")
def history(
    rule: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    with open_platform() as platform:
        firings = platform.triggers.firings(rule=rule, limit=limit)
    if as_json:
        _json(firings)
        return
    for firing in firings:
        _print_firing(firing)


@triggers_app.command("approve")
def approve(firing_id: str, user: User = None) -> None:
    """Run the actions a firing holds for approval (needs the approver or admin role)."""
    with open_platform() as platform:
        _print_firing(platform.triggers.approve(firing_id, by=actor(user)))


@triggers_app.command("reject")
def reject(firing_id: str, reason: Annotated[str, typer.Option()] = "", user: User = None) -> None:
    with open_platform() as platform:
        _print_firing(platform.triggers.reject(firing_id, by=actor(user), reason=reason))


def _print_firing(firing: dict[str, Any]) -> None:
    inputs = firing["inputs"]
    seen = f" (saw {inputs['value']:.3g} over {inputs['count']})" if isinstance(inputs.get("value"), float) else ""
    console.print(
        f"[bold]{firing['id']}[/] {firing['created_at'][:19]} {firing['rule']}: {firing['status']}{seen}",
        highlight=False,
    )
    for run in firing["actions"]:
        detail = run["result"].get("error") if run["status"] == "failed" else json.dumps(run["result"])[:160]
        console.print(f"  {run['action']}: {run['status']} {detail or ''}", highlight=False)


@runbooks_app.command("list")
def list_runbooks() -> None:
    with open_platform() as platform:
        runbooks = list(platform.runbooks.values())
    table = Table("runbook", "parameters", "steps", "what it is for")
    for r in runbooks:
        table.add_row(
            r.name,
            ", ".join(f"{k}={v}" for k, v in r.params.items()),
            " → ".join(next(iter(s)) for s in r.steps),
            r.description,
        )
    console.print(table)


@runbooks_app.command("run")
def run_runbook(
    name: str,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE (repeatable)")] = None,
    user: User = None,
) -> None:
    """Run a runbook now: ``llmops runbooks run provider-outage -p model=gpt-4o``."""
    params: dict[str, Any] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--param takes NAME=VALUE, not {item!r}")
        params[key] = yaml.safe_load(value) if value else value  # numbers stay numbers
    with open_platform() as platform:
        firing = platform.run_runbook(name, params, by=actor(user))
    _print_firing(firing)
    if firing["status"] not in ("acted", "pending_approval"):
        raise typer.Exit(1)


@reviews_app.command("list")
def list_reviews(status: Annotated[str, typer.Option()] = "open") -> None:
    with open_platform() as platform:
        items = platform.reviews.list(status=status)
    table = Table("id", "opened", "title", "status")
    for item in items:
        table.add_row(item["id"], item["created_at"][:19], item["title"], item["status"])
    console.print(table)


@reviews_app.command("resolve")
def resolve_review(
    item_id: str,
    resolution: Annotated[str, typer.Option()] = "",
    dismiss: bool = False,
    release: Annotated[bool, typer.Option("--release", help="a held answer: release it to its caller")] = False,
    withhold: Annotated[bool, typer.Option("--withhold", help="a held answer: never show it")] = False,
    answer: Annotated[str | None, typer.Option("--answer", help="release this edited answer instead")] = None,
    user: User = None,
) -> None:
    """Close a review item; a held answer needs --release (optionally with --answer) or --withhold."""
    if release and withhold:
        raise typer.BadParameter("--release or --withhold, not both")
    verdict: Literal["release", "withhold"] | None = (
        "release" if release or answer else "withhold" if withhold else None
    )
    with open_platform() as platform:
        item = platform.reviews.resolve(
            item_id, by=actor(user), resolution=resolution, dismiss=dismiss, verdict=verdict, answer=answer
        )
        platform.audit.record(actor(user), "review.resolve", "review_item", item_id, details={"status": item["status"]})
    console.print(f"{item_id}: {item['status']}")


@drift_app.command("check")
def drift_check(app: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Test the app's newest queries against its reference window, and explain any drift."""
    with open_platform() as platform:
        result = platform.drift.check(app)
    if result is None:
        console.print(f"not enough observed queries of {app} yet")
        return
    if as_json:
        _json(result.to_dict())
        return
    console.print(result.summary(), highlight=False)
    for cluster in result.clusters[:5]:
        console.print(
            f"  {'NEW ' if cluster.new else ''}{', '.join(cluster.terms)}: "
            f"{cluster.reference_share:.0%} → {cluster.current_share:.0%}; e.g. {cluster.examples[:2]}",
            highlight=False,
        )


@drift_app.command("retrieval")
def retrieval(app: str, window_s: Annotated[float, typer.Option()] = 3600.0) -> None:
    """Top-1 similarity, 'no relevant context' rate and index freshness, this window against the previous."""
    with open_platform() as platform:
        _json(platform.drift.retrieval_health(app, window_s=window_s))


@metrics_app.command("show")
def show_metric(
    metric: str,
    app: Annotated[str | None, typer.Option()] = None,
    window_s: Annotated[float, typer.Option()] = 3600.0,
    bucket_s: Annotated[float | None, typer.Option(help="a series of buckets instead of one value")] = None,
    group_by: Annotated[str | None, typer.Option()] = None,
) -> None:
    with open_platform() as platform:
        if bucket_s is None and group_by is None:
            value = platform.request_metrics.value(metric, app=app, window_s=window_s)
            console.print(f"{metric}: {value.value if value.value is not None else 'n/a'} (n={value.count})")
            return
        points = platform.request_metrics.series(
            metric, app=app, window_s=window_s, bucket_s=bucket_s or window_s, group_by=group_by
        )
    table = Table("from", "group", "value", "n")
    for p in points:
        table.add_row(
            p["t"][:19], str(p["group"] or ""), "n/a" if p["value"] is None else f"{p['value']:.4g}", str(p["count"])
        )
    console.print(table)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exits 1 and names the first bad entry if it was tampered with."""
    with open_platform() as platform:
        result = platform.audit.verify()
    if result.ok:
        console.print(f"audit log intact: {result.entries} entries")
        return
    errors.print(f"[red]audit log broken at entry {result.first_bad_seq}: {result.problem}[/]", highlight=False)
    raise typer.Exit(1)


@audit_app.command("export")
def audit_export(output: Annotated[Path | None, typer.Option("-o")] = None) -> None:
    """Every entry as JSON lines (stdout, or a file)."""
    with open_platform() as platform:
        if output is None:
            for line in platform.audit.export_jsonl():
                sys.stdout.buffer.write(line)
            return
        with output.open("wb") as handle:
            for line in platform.audit.export_jsonl():
                handle.write(line)
    console.print(f"wrote {output}")


@audit_app.command("list")
def audit_list(
    action: Annotated[str | None, typer.Option(help="entries whose action starts with this")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    with open_platform() as platform:
        entries = platform.audit.entries(action=action)[-limit:]
    table = Table("#", "when", "actor", "action", "object")
    for e in entries:
        table.add_row(str(e["seq"]), e["at"][:19], e["actor"], e["action"], f"{e['object_type']} {e['object_id']}")
    console.print(table)
