"""What every command shares: the consoles, and a platform opened for one command."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console

from llmops._platform import Platform
from llmops._settings import Settings
from llmops.prompts import ApprovalRequiredError, PromptTemplateError, ReviewRefusedError

__all__ = ["console", "errors", "message", "open_platform", "with_platform"]

# Piped output (a file, grep, CI logs) is not cut to 80 columns: tables keep whole ids and labels on one line.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)
T = TypeVar("T")

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


def message(exc: BaseException) -> str:
    """The error's own words (``str(KeyError("x"))`` would add quotes)."""
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)


def with_platform(fn: Callable[[Platform], T]) -> T:
    with open_platform() as platform:
        return fn(platform)
