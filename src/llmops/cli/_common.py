"""What every command shares: the consoles, and a platform opened for one command."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from llmops._platform import Platform
from llmops._settings import Settings
from llmops.prompts import ApprovalRequiredError, PromptTemplateError, ReviewRefusedError

__all__ = ["Env", "User", "actor", "console", "errors", "message", "open_platform", "with_platform"]

# Piped output (a file, grep, CI logs) is not cut to 80 columns: tables keep whole ids and labels on one line.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)
T = TypeVar("T")

User = Annotated[str | None, typer.Option("--user", envvar="LLMOPS_USER", help="who acts (default: OS user)")]
Env = Annotated[str | None, typer.Option("--env", help="environment (default: LLMOPS_ENVIRONMENT)")]

# Errors that mean "you asked for something that cannot be": one red line, exit code 1, no traceback.
_USER_ERRORS = (LookupError, PromptTemplateError, ApprovalRequiredError, ReviewRefusedError, ValueError, OSError)


@contextmanager
def open_platform(**overrides: Any) -> Iterator[Platform]:
    """A platform built from settings (plus ``overrides``) for one command, closed afterwards."""
    try:
        platform = Platform(Settings(**overrides))
    except Exception as exc:
        errors.print(f"[red]cannot start llmops:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    try:
        yield platform
    except _USER_ERRORS as exc:
        errors.print(f"[red]{message(exc)}[/]", highlight=False)
        raise typer.Exit(1) from exc
    finally:
        platform.close()


def actor(user: str | None) -> str:
    """Who acts: ``--user``, else ``LLMOPS_USER``, else the operating-system user."""
    return user or getpass.getuser()


def message(exc: BaseException) -> str:
    """The error's own words (``str(KeyError("x"))`` would add quotes)."""
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)


def with_platform(fn: Callable[[Platform], T]) -> T:
    with open_platform() as platform:
        return fn(platform)
