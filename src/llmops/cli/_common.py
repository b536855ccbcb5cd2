"""What every command shares: the consoles, and a platform opened for one command."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import typer
from rich.console import Console

from llmops._platform import Platform
from llmops._settings import Settings
from llmops.prompts import ApprovalRequiredError, PromptTemplateError, ReviewRefusedError

__all__ = ["console", "errors", "open_platform", "with_platform"]

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

# Errors that mean "you asked for something that cannot be": one red line, exit code 1, no traceback.
_USER_ERRORS = (LookupError, PromptTemplateError, ApprovalRequiredError, ReviewRefusedError, ValueError, OSError)


@contextmanager
def open_platform() -> Iterator[Platform]:
    """A platform built from settings for one command, closed afterwards."""
    try:
        platform = Platform(Settings())
    except Exception as exc:
        errors.print(f"[red]cannot start llmops:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    try:
        yield platform
    except _USER_ERRORS as exc:
        errors.print(f"[red]{str(exc).strip(chr(39))}[/]", highlight=False)
        raise typer.Exit(1) from exc
    finally:
        platform.close()


def with_platform(fn: Callable[[Platform], T]) -> T:
    with open_platform() as platform:
        return fn(platform)
