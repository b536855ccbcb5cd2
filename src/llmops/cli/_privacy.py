"""``llmops privacy ...``: the right to erasure from the terminal."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llmops.cli._common import User, actor, console, errors, open_platform

__all__ = ["privacy_app"]

privacy_app = typer.Typer(no_args_is_help=True)


@privacy_app.callback()
def privacy() -> None:
    """Personal data: erase a user's content on request."""  # a group, even while ``erase`` is its only command


@privacy_app.command("erase")
def erase(
    user_id: Annotated[str, typer.Argument(help="the user id as requests named it (API key user or request user)")],
    yes: Annotated[bool, typer.Option("--yes", help="erase without asking (there is no undo)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
    user: User = None,
) -> None:
    """Erase a user's content: traces, questions, answers, feedback text, dataset items made from their requests.
    Metrics, costs and feedback values stay under a pseudonym; one privacy.erase entry goes to the audit log."""
    if not yes and not typer.confirm(f"Erase everything {user_id!r} asked and wrote? This cannot be undone"):
        errors.print("nothing erased")
        raise typer.Exit(1)
    with open_platform() as platform:
        counts = platform.erase_user(user_id, by=actor(user))
    if as_json:
        console.print_json(json.dumps(counts))
        return
    console.print(f"erased {counts['requests']} request(s) of the user; audit entry {counts['audit_seq']}")
    for name, count in counts.items():
        if name not in ("requests", "audit_seq") and count:
            console.print(f"  {name.replace('_', ' ')}: {count}", highlight=False)
