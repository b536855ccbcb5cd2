"""``llmops projects|users|roles|keys ...``: access control from the terminal (the operator's own tool: it works on
the database directly, so it needs no key; every change goes to the audit log under ``--user``)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from llmops.cli._common import User, actor, console, with_platform
from llmops.governance import ALL_PROJECTS

__all__ = ["keys_app", "projects_app", "roles_app", "users_app"]

projects_app = typer.Typer(help="Projects: what isolates prompts, policies, datasets, apps and traces.")
users_app = typer.Typer(help="Users and service accounts.", no_args_is_help=True)
roles_app = typer.Typer(help="Who holds which role (admin, approver, editor, viewer, app) where.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys: shown once, stored as a hash, scoped, expiring, revocable.", no_args_is_help=True
)

Project = Annotated[str, typer.Option("--project", "-p", help="the project ('*': every project)")]
UserName = Annotated[str, typer.Argument(metavar="USER")]


@projects_app.command("create")
def projects_create(name: str, description: str = "", user: User = None) -> None:
    """Create a project."""
    with_platform(lambda p: p.access.projects.create(name, by=actor(user), description=description))
    console.print(f"project {name} created")


@projects_app.command("list")
def projects_list() -> None:
    """Every project."""
    table = Table("project", "created by", "created at", "description")
    for row in with_platform(lambda p: p.access.projects.list()):
        table.add_row(row["name"], row["created_by"], row["created_at"][:19], row["description"])
    console.print(table)


@users_app.command("add")
def users_add(
    name: str,
    service: Annotated[bool, typer.Option("--service", help="a service account (a program), not a person")] = False,
    user: User = None,
) -> None:
    """Add a user (or, with --service, a service account)."""
    kind = "service" if service else "user"
    with_platform(lambda p: p.access.principals.add(name, kind=kind, by=actor(user)))
    console.print(f"{kind} {name} added")


@users_app.command("disable")
def users_disable(name: str, user: User = None) -> None:
    """Disable a user or service account and revoke every key it holds."""
    result = with_platform(lambda p: p.access.principals.disable(name, by=actor(user)))
    console.print(f"{name} disabled; keys revoked: {', '.join(result['keys_revoked']) or 'none'}")


@users_app.command("list")
def users_list() -> None:
    """Every user and service account."""
    table = Table("name", "kind", "created by", "disabled")
    for row in with_platform(lambda p: p.access.principals.list()):
        table.add_row(row["name"], row["kind"], row["created_by"], (row["disabled_at"] or "")[:19])
    console.print(table)


@roles_app.command("grant")
def roles_grant(user_name: UserName, role: str, project: Project = ALL_PROJECTS, user: User = None) -> None:
    """Give USER a role in a project (in every project by default)."""
    with_platform(lambda p: p.roles.grant(user_name, role, by=actor(user), project=project))
    console.print(f"{user_name} is now {role}" + ("" if project == ALL_PROJECTS else f" in {project}"))


@roles_app.command("revoke")
def roles_revoke(user_name: UserName, role: str, project: Project = ALL_PROJECTS, user: User = None) -> None:
    """Take a role in a project from USER."""
    removed = with_platform(lambda p: p.roles.revoke(user_name, role, by=actor(user), project=project))
    console.print(f"{user_name} is no longer {role}" if removed else f"{user_name} did not hold {role} there")


@roles_app.command("list")
def roles_list(project: Annotated[str | None, typer.Option("--project", "-p")] = None) -> None:
    """Every role grant (or those that hold in one project)."""
    table = Table("user", "role", "project")
    for user_name, role, where in with_platform(lambda p: p.roles.grants(project)):
        table.add_row(user_name, role, where)
    console.print(table)


@keys_app.command("create")
def keys_create(
    principal: Annotated[str, typer.Argument(help="the user or service account the key acts as")],
    project: Annotated[str, typer.Option("--project", "-p", help="the project the key acts in")] = "default",
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="limit to read, invoke, write, approve, admin")
    ] = None,
    expires_days: Annotated[float | None, typer.Option("--expires-days", min=0.001)] = None,
    name: str = "",
    team: str | None = None,
    app: str | None = None,
    cost_centre: str | None = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    user: User = None,
) -> None:
    """Make an API key. It is printed once and never stored: keep it now."""
    expires = timedelta(days=expires_days) if expires_days else None
    record, secret = with_platform(
        lambda p: p.access.keys.create(
            principal,
            project,
            by=actor(user),
            name=name,
            scopes=scope or (),
            expires_in=expires,
            team=team,
            app=app,
            cost_centre=cost_centre,
        )
    )
    if as_json:
        console.print_json(json.dumps({**record, "key": secret}))
        return
    console.print(f"key {record['id']} for {principal} in {project} (shown once, not stored):")
    console.print(secret, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(project: Annotated[str | None, typer.Option("--project", "-p")] = None) -> None:
    """Keys (ids, owners and state; never the keys)."""
    table = Table("id", "principal", "project", "scopes", "state", "expires", "last used")
    for row in with_platform(lambda p: p.access.keys.list(project=project)):
        table.add_row(
            row["id"],
            row["principal"],
            row["project"],
            ",".join(row["scopes"]) or "(roles)",
            row["state"],
            (row["expires_at"] or "never")[:19],
            (row["last_used_at"] or "")[:19],
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, user: User = None) -> None:
    """Revoke a key (at once on this host; within seconds on running servers)."""
    with_platform(lambda p: p.access.keys.revoke(key_id, by=actor(user)))
    console.print(f"key {key_id} revoked")
