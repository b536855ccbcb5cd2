"""``llmops guardrails ...``: the guardrail policy registry from the terminal.

The acting user is ``--user``, else ``LLMOPS_USER``, else the operating-system user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmops._platform import Platform
from llmops.cli._common import Env, User, actor, console, errors, open_platform, with_platform
from llmops.guardrails import GuardrailPolicy, GuardResult, PolicyError, PolicyNotFoundError, PolicyRegistry

__all__ = ["guardrails_app"]

guardrails_app = typer.Typer(help="Guardrail policies: versions, labels, history, checks.", no_args_is_help=True)

Label = Annotated[str, typer.Option(help="the label (the engine follows 'production' by default)")]


@guardrails_app.command("list")
def guardrails_list() -> None:
    """Every policy with its newest version and its labels per environment."""
    table = Table("name", "latest", "labels", "description")
    for p in with_platform(lambda platform: platform.guardrail_policies.list_policies()):
        labels = "  ".join(f"{env}/{label}→v{v}" for env, ls in p["labels"].items() for label, v in ls.items())
        table.add_row(p["name"], f"v{p['latest_version']}", labels, p["description"])
    console.print(table)


@guardrails_app.command("show")
def guardrails_show(
    name: str,
    version: Annotated[int | None, typer.Option(help="a version number; the label's version if omitted")] = None,
    label: Label = "production",
    env: Env = None,
) -> None:
    """Print a version's YAML as it was pushed (who and when go to stderr, so the output can be saved as a file)."""
    v = with_platform(
        lambda platform: (
            platform.guardrail_policies.get_version(name, version)
            if version
            else platform.guardrail_policies.resolve(name, label=label, environment=env)
        )
    )
    errors.print(f"{v.name} v{v.version} by {v.author} at {v.created_at:%Y-%m-%d %H:%M} ({v.content_hash[:12]})"
                 + (f": {v.message}" if v.message else ""), style="dim", markup=False, highlight=False)  # fmt: skip
    console.print(v.source, markup=False, highlight=False, end="" if v.source.endswith("\n") else "\n")


@guardrails_app.command("versions")
def guardrails_versions(name: str) -> None:
    """Every version of a policy with the labels pointing at it."""

    def gather(registry: PolicyRegistry) -> tuple[list[tuple[int, str, str, str, str]], dict[int, list[str]]]:
        rows = [(v.version, v.author, f"{v.created_at:%Y-%m-%d %H:%M}", v.content_hash[:12], v.message)
                for v in registry.versions(name)]  # fmt: skip
        pointers: dict[int, list[str]] = {}
        for environment in registry.environments:
            for label, version in registry.labels(name, environment).items():
                pointers.setdefault(version, []).append(f"{environment}/{label}")
        return rows, pointers

    rows, pointers = with_platform(lambda platform: gather(platform.guardrail_policies))
    table = Table("version", "labels", "author", "created (UTC)", "hash", "message")
    for version, author, created, digest, message in rows:
        table.add_row(f"v{version}", ", ".join(sorted(pointers.get(version, []))), author, created, digest, message)
    console.print(table)


@guardrails_app.command("push")
def guardrails_push(
    paths: Annotated[list[Path], typer.Argument(help="policy files, or folders of *.yaml / *.yml policy files")],
    label: Annotated[str | None, typer.Option(help="also point this label at each pushed version")] = None,
    env: Env = None,
    message: Annotated[str, typer.Option("--message", "-m", help="why this change (kept with the version)")] = "",
    user: User = None,
) -> None:
    """Create a version for every changed policy file; an unchanged file creates nothing, a bad one is reported."""
    files, failed = _policy_files(paths)
    who = actor(user)
    with open_platform() as platform:
        registry = platform.guardrail_policies
        if label is not None and env is not None and env not in registry.environments:
            raise PolicyNotFoundError(
                f"unknown environment {env!r}; environments are {', '.join(registry.environments)}"
            )
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
                name = GuardrailPolicy.from_yaml(text).name
                try:
                    before: int | None = registry.latest(name).version
                except PolicyNotFoundError:
                    before = None
                version = registry.create(text, author=who, message=message)
                if label is not None:
                    registry.move_label(name, label, version.version, environment=env, by=who, reason=message)
            except (OSError, UnicodeDecodeError, PolicyError, LookupError, ValueError, RuntimeError) as exc:
                failed.append((str(path), str(exc)))
                continue
            state = "unchanged" if version.version == before else "[green]created[/]"
            where = f", {env or registry.default_environment}/{label} → v{version.version}" if label else ""
            console.print(f"{state} {name} v{version.version} ({path}){where}", highlight=False)
    for where, reason in failed:
        errors.print(f"[red]failed[/] {where}: {reason}", highlight=False)
    if failed:
        raise typer.Exit(1)


def _policy_files(paths: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files to push (a folder's *.yaml and *.yml, in name order), and the paths that hold none."""
    files: list[Path] = []
    failed: list[tuple[str, str]] = []
    for path in paths:
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                failed.append((str(path), "the folder holds no *.yaml or *.yml files"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            failed.append((str(path), "no such file or folder"))
    return files, failed


@guardrails_app.command("label")
def guardrails_label(
    name: str, version: int, label: Label = "production", env: Env = None, reason: str = "", user: User = None
) -> None:
    """Point a label at a version in an environment."""
    with_platform(
        lambda p: p.guardrail_policies.move_label(name, label, version, environment=env, by=actor(user), reason=reason)
    )
    console.print(f"{name} {env or 'default env'}/{label} → v{version}", highlight=False)


@guardrails_app.command("rollback")
def guardrails_rollback(
    name: str, label: Label = "production", env: Env = None, reason: str = "", user: User = None
) -> None:
    """Put a label back on the version it pointed at before its last move."""
    version = with_platform(
        lambda p: p.guardrail_policies.rollback(name, label, environment=env, by=actor(user), reason=reason)
    )
    console.print(f"{name} {env or 'default env'}/{label} rolled back to v{version}", highlight=False)


@guardrails_app.command("history")
def guardrails_history(name: str) -> None:
    """Every new version, label move and rollback of a policy, with who and why."""
    table = Table("when (UTC)", "kind", "where", "from", "to", "who", "reason")
    for h in with_platform(lambda platform: platform.guardrail_policies.history(name)):
        where = f"{h.environment}/{h.label}" if h.label else ""
        table.add_row(f"{h.at:%Y-%m-%d %H:%M:%S}", h.kind, where, _v(h.from_version), _v(h.to_version), h.actor,
                      h.reason)  # fmt: skip
    console.print(table)


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else "-"


@guardrails_app.command("diff")
def guardrails_diff(name: str, a: int, b: int) -> None:
    """Unified diff of two versions' YAML."""
    console.print(with_platform(lambda p: p.guardrail_policies.diff(name, a, b)) or "(identical)", markup=False,
                  highlight=False)  # fmt: skip


@guardrails_app.command("check")
def guardrails_check(
    text: Annotated[str, typer.Argument(help="the text to check ('-' reads standard input)")],
    policy: Annotated[str, typer.Option(help="a policy name (at --label) or a YAML file")] = "default",
    stage: Annotated[str, typer.Option(help="input, context or output")] = "input",
    context: Annotated[list[Path] | None, typer.Option(help="output: a file of retrieved context (repeatable)")] = None,
    label: Label = "production",
    env: Env = None,
) -> None:
    """Run a policy's rails on a text and print each decision (exit 1 when the text would be blocked)."""
    import sys

    if text == "-":
        text = sys.stdin.read()
    if stage not in ("input", "context", "output"):
        raise typer.BadParameter("stage must be input, context or output", param_hint="--stage")
    sources = [path.read_text(encoding="utf-8") for path in context or []]

    def run(platform: Platform) -> GuardResult:
        path = Path(policy)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            engine = platform.guardrails.compile(GuardrailPolicy.from_yaml(path.read_text(encoding="utf-8")))
        else:
            found = platform.guardrail_policies.resolve(policy, label=label, environment=env)
            engine = platform.guardrails.compile(found.policy, version=found.version)
        if stage == "input":
            return engine.check_input(text)
        if stage == "context":
            return engine.check_context([text])
        return engine.check_output(text, context=sources)

    result = with_platform(run)
    table = Table("rail", "action", "score", "ms", "found", "reason", title=f"{result.policy} on the {stage}")
    for d in result.decisions:
        table.add_row(d.rail, d.action, f"{d.score:.3f}", f"{d.latency_ms:.2f}", ", ".join(d.kinds), d.reason)
    console.print(table)
    if result.grounding is not None:
        console.print(f"grounding score {result.grounding.score:.2f}")
    if not result.allowed or result.dropped:
        what = result.message if not result.allowed else f"chunk dropped by {result.decisions[0].rail}"
        console.print(f"[red]{result.blocked_by or 'dropped'}:[/] {what}", highlight=False)
        raise typer.Exit(1)
    console.print(result.text, markup=False, highlight=False)
