"""Plugins: implementations of the platform's seams, found through entry points.

A package adds a provider by declaring, in its ``pyproject.toml``::

    [project.entry-points."llmops.providers"]
    my-provider = "my_package:MyProvider"   # a class with from_config(model_config, settings) -> Provider
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

__all__ = ["load_plugin"]


def load_plugin(group: str, name: str) -> Any:
    """The object registered under ``name`` in the entry-point ``group``; a clear error names what is installed."""
    found = entry_points(group=group)
    for entry in found:
        if entry.name == name:
            return entry.load()
    available = ", ".join(sorted(e.name for e in found)) or "none"
    raise LookupError(f"no {group} plugin named {name!r}; installed: {available}")
