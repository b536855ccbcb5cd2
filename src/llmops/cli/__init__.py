"""The ``llmops`` command line."""

from llmops.cli._main import app, main

__all__ = ["app", "main"]
