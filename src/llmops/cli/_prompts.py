"""``llmops prompts ...``: the prompt registry from the terminal.

The acting user is ``--user``, else ``LLMOPS_USER``, else the operating-system user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmops._platform import Platform
from llmops.cli._common import Env, User, actor, console, errors, with_platform
from llmops.prompts import Comparison, Experiment, pull_prompts, push_prompts

__all__ = ["prompts_app"]

prompts_app = typer.Typer(help="The prompt registry: versions, labels, approvals, experiments.", no_args_is_help=True)
experiment_app = typer.Typer(help="A/B tests and canaries on a label.", no_args_is_help=True)
prompts_app.add_typer(experiment_app, name="experiment")


@prompts_app.command("list")
def prompts_list() -> None:
    """Every prompt with its newest version and its labels per environment."""
    table = Table("name", "latest", "labels")
    for p in with_platform(lambda platform: platform.prompts.list_prompts()):
        labels = "  ".join(f"{env}/{label}→v{v}" for env, ls in p["labels"].items() for label, v in ls.items())
        table.add_row(p["name"], f"v{p['latest_version']}", labels)
    console.print(table)


@prompts_app.command("show")
def prompts_show(
    name: str,
    version: Annotated[int | None, typer.Option(help="a version number; the label's version if omitted")] = None,
    label: str = "production",
    env: Env = None,
) -> None:
    """Print a version's messages, variables and parameters."""
    v = with_platform(
        lambda platform: (
            platform.prompts.get_version(name, version)
            if version
            else platform.prompts.resolve(name, label=label, environment=env)
        )
    )
    console.print(
        f"[bold]{v.name}[/] v{v.version} by {v.author} at {v.created_at:%Y-%m-%d %H:%M} ({v.content_hash[:12]})"
    )
    if v.commit_message:
        console.print(f"[dim]{v.commit_message}[/]")
    for m in v.messages:
        console.rule(m["role"])
        console.print(m["content"], markup=False, highlight=False)
    console.rule()
    console.print(f"variables: {v.variables}\nparams: {v.params}\ntags: {v.tags}", markup=False, highlight=False)


@prompts_app.command("versions")
def prompts_versions(name: str) -> None:
    """Every version of a prompt with its stage, labels and commit message."""
    table = Table("version", "stage", "labels", "author", "created (UTC)", "message")
    for v in with_platform(lambda platform: platform.prompts.versions(name)):
        stage = v.stage + (" (archived)" if v.archived else "")
        table.add_row(f"v{v.version}", stage, ", ".join(v.labels), v.author, f"{v.created_at:%Y-%m-%d %H:%M}",
                      v.commit_message)  # fmt: skip
    console.print(table)


@prompts_app.command("diff")
def prompts_diff(name: str, a: int, b: int) -> None:
    """Unified diff of two versions (messages, variables, parameters)."""
    console.print(with_platform(lambda platform: platform.prompts.diff(name, a, b)) or "(identical)", markup=False,
                  highlight=False)  # fmt: skip


@prompts_app.command("label")
def prompts_label(name: str, label: str, version: int, env: Env = None, reason: str = "", user: User = None) -> None:
    """Point a label at a version (a protected label needs `llmops prompts request` instead)."""
    with_platform(lambda p: p.prompts.move_label(name, label, version, environment=env, by=actor(user), reason=reason))
    console.print(f"{name} {env or 'default env'}/{label} → v{version}")


@prompts_app.command("rollback")
def prompts_rollback(
    name: str, label: str = "production", env: Env = None, reason: str = "", user: User = None
) -> None:
    """Put a label back on its previous version."""
    version = with_platform(lambda p: p.prompts.rollback(name, label, environment=env, by=actor(user), reason=reason))
    console.print(f"{name} {env or 'default env'}/{label} rolled back to v{version}")


@prompts_app.command("history")
def prompts_history(name: str) -> None:
    """Every label move, rollback, stage change and experiment event of a prompt."""
    table = Table("when (UTC)", "kind", "where", "from", "to", "who", "detail")
    for h in with_platform(lambda platform: platform.prompts.history(name)):
        where = f"{h.environment}/{h.label}" if h.label else ""
        table.add_row(f"{h.at:%Y-%m-%d %H:%M:%S}", h.kind, where, _v(h.from_version), _v(h.to_version), h.actor,
                      h.detail + (f" (request {h.change_request_id})" if h.change_request_id else ""))  # fmt: skip
    console.print(table)


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else "-"


@prompts_app.command("stage")
def prompts_stage(name: str, version: int, stage: str, user: User = None) -> None:
    """Move a version through draft → testing → production → deprecated."""
    with_platform(lambda p: p.prompts.set_stage(name, version, stage, by=actor(user)))
    console.print(f"{name} v{version} is now {stage}")


@prompts_app.command("push")
def prompts_push(
    folder: Path,
    label: Annotated[str | None, typer.Option(help="also point this label at each pushed version")] = None,
    env: Env = None,
    user: User = None,
) -> None:
    """Create a version for every changed prompt file in FOLDER (YAML); unchanged files create nothing."""
    report = with_platform(lambda p: push_prompts(p.prompts, folder, author=actor(user), label=label, environment=env))
    for name, version in report.created:
        console.print(f"[green]created[/] {name} v{version}")
    for name, version in report.unchanged:
        console.print(f"unchanged {name} v{version}")
    for name, request in report.approval_requests:
        console.print(f"[yellow]approval requested[/] {name}: change request {request}")
    for path, reason in report.failed:
        errors.print(f"[red]failed[/] {path}: {reason}", markup=True, highlight=False)
    if report.failed:
        raise typer.Exit(1)


@prompts_app.command("pull")
def prompts_pull(
    folder: Path,
    label: Annotated[str | None, typer.Option(help="the version this label points at (default: the newest)")] = None,
    env: Env = None,
) -> None:
    """Write every prompt to FOLDER/<name>.yaml."""
    for path in with_platform(lambda p: pull_prompts(p.prompts, folder, label=label, environment=env)):
        console.print(f"wrote {path}")


@prompts_app.command("policy")
def prompts_policy(
    env: Annotated[str, typer.Argument(help="environment")],
    label: str,
    approvals: Annotated[int, typer.Option(help="approvals needed to move the label")],
    prompt: Annotated[str, typer.Option(help="a prompt name, or * for all")] = "*",
    check: Annotated[str | None, typer.Option(help="a check the version must have passed, e.g. eval-gate")] = None,
    user: User = None,
) -> None:
    """Protect a label: moving it needs approvals (and optionally a passed check)."""
    policy = with_platform(
        lambda p: p.prompts.approvals.set_policy(
            prompt, env, label, required_approvals=approvals, required_check=check, by=actor(user)
        )
    )
    console.print(policy.describe())


@prompts_app.command("request")
def prompts_request(name: str, label: str, version: int, env: Env = None, reason: str = "", user: User = None) -> None:
    """Ask to move a protected label; approvers then approve or reject."""
    request = with_platform(
        lambda p: p.prompts.approvals.request(name, label, version, environment=env, by=actor(user), reason=reason)
    )
    console.print(f"change request {request.id}: {name} {request.environment}/{label} → v{version}, "
                  f"needs {request.waiting_for}")  # fmt: skip


@prompts_app.command("requests")
def prompts_requests(status: str = "pending") -> None:
    """Change requests (pending by default; --status all for every one)."""
    table = Table("id", "prompt", "where", "from", "to", "by", "status", "waiting for", "reviews")
    found = with_platform(lambda p: p.prompts.approvals.requests(status=None if status == "all" else status))
    for r in found:
        reviews = ", ".join(f"{x['reviewer']}:{x['decision']}" for x in r.reviews)
        table.add_row(str(r.id), r.prompt_name, f"{r.environment}/{r.label}", _v(r.from_version), _v(r.to_version),
                      r.requested_by, r.status, r.waiting_for or "", reviews)  # fmt: skip
    console.print(table)


@prompts_app.command("approve")
def prompts_approve(request_id: int, comment: str = "", user: User = None) -> None:
    """Approve a change request (approver role; not the author or requester)."""
    r = with_platform(lambda p: p.prompts.approvals.approve(request_id, by=actor(user), comment=comment))
    console.print(f"change request {r.id} is {r.status}" + (f", waiting for {r.waiting_for}" if r.waiting_for else ""))


@prompts_app.command("reject")
def prompts_reject(request_id: int, comment: str = "", user: User = None) -> None:
    """Reject a change request."""
    r = with_platform(lambda p: p.prompts.approvals.reject(request_id, by=actor(user), comment=comment))
    console.print(f"change request {r.id} is {r.status}")


@prompts_app.command("check")
def prompts_check(
    name: str,
    version: int,
    check: str,
    passed: Annotated[bool, typer.Option("--passed/--failed", help="the check's result")],
    user: User = None,
) -> None:
    """Record a check result (an evaluation gate, say) on a version."""
    with_platform(lambda p: p.prompts.approvals.record_check(name, version, check, passed=passed, by=actor(user)))
    console.print(f"{name} v{version}: {check} {'passed' if passed else 'failed'}")


@experiment_app.command("start")
def experiment_start(
    name: str,
    variant: Annotated[list[str], typer.Option(help="VERSION=WEIGHT, once per variant (the current one included)")],
    label: str = "production",
    env: Env = None,
    metric: Annotated[str, typer.Option(help="primary metric")] = "feedback",
    min_samples: int = 100,
    auto_promote: bool = False,
    max_error_rate: float | None = None,
    max_guardrail_rate: float | None = None,
    user: User = None,
) -> None:
    """Split a label's traffic between versions."""
    try:
        weights = {int(v): float(w) for v, w in (item.split("=", 1) for item in variant)}
    except ValueError as exc:
        errors.print(f"[red]--variant takes VERSION=WEIGHT, like 2=0.1: {exc}[/]")
        raise typer.Exit(2) from exc
    settings = {"primary_metric": metric, "min_samples": min_samples, "auto_promote": auto_promote,
                "max_error_rate": max_error_rate, "max_guardrail_rate": max_guardrail_rate}  # fmt: skip
    e = with_platform(
        lambda p: p.prompts.experiments.start(name, label, weights, environment=env, by=actor(user), settings=settings)
    )
    console.print(f"experiment {e.id} running on {name} {e.environment}/{label}: {e.variants}")


@experiment_app.command("show")
def experiment_show(experiment_id: str, metric: str | None = None) -> None:
    """Variants, samples and each variant's comparison with the control."""

    def gather(p: Platform) -> tuple[Experiment, list[tuple[int, Comparison]]]:
        return p.prompts.experiments.get(experiment_id), p.prompts.experiments.compare(experiment_id, metric)

    e, comparisons = with_platform(gather)
    console.print(f"{e.id} on {e.prompt_name} {e.environment}/{e.label}: {e.status}, variants {e.variants}, "
                  f"control v{e.control_version}")  # fmt: skip
    if e.result:
        console.print(f"result: {e.result}")
    table = Table("variant", "metric", "test", "n", "control", "variant", "difference [CI]", "p", "verdict")
    for version, c in comparisons:
        verdict = "better" if c.improved else "worse" if c.regressed else "no significant difference"
        table.add_row(f"v{version}", c.metric, c.test, f"{c.control_n}/{c.variant_n}", f"{c.control_mean:.4g}",
                      f"{c.variant_mean:.4g}", f"{c.difference:+.4g} [{c.ci_low:.3g}, {c.ci_high:.3g}]",
                      f"{c.p_value:.3g}", verdict)  # fmt: skip
    console.print(table)


@experiment_app.command("evaluate")
def experiment_evaluate(experiment_id: str, user: User = None) -> None:
    """Apply the experiment's rules now: roll back a failing canary, promote a significant winner."""
    console.print(with_platform(lambda p: p.prompts.experiments.evaluate(experiment_id, by=actor(user))))


@experiment_app.command("stop")
def experiment_stop(experiment_id: str, reason: str = "", user: User = None) -> None:
    """End an experiment; the label stays on the control version."""
    e = with_platform(lambda p: p.prompts.experiments.stop(experiment_id, by=actor(user), reason=reason))
    console.print(f"experiment {e.id} {e.status}")
