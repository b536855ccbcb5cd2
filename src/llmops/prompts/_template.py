"""Template rendering in a sandbox. This module is the one place a prompt template is compiled or rendered.

Jinja2's ``ImmutableSandboxedEnvironment`` blocks attribute access to internals at render time; on top of that a
template that even names an underscore attribute (``__globals__``, ``__class__``, ``_private``) is refused when it is
checked, so a hostile template never reaches the registry.
"""

from __future__ import annotations

import threading
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["MAX_TEMPLATE_CHARS", "PromptTemplateError", "TemplateRenderer"]

MAX_TEMPLATE_CHARS = 100_000


class PromptTemplateError(ValueError):
    """A template is malformed, unsafe, or was rendered with missing or unknown variables."""


def _unsafe_name(value: object) -> bool:
    return isinstance(value, str) and value.startswith("_")


class TemplateRenderer:
    """Compiles (once, cached) and renders templates in a sandbox with strict undefined variables."""

    def __init__(self) -> None:
        self._env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, trim_blocks=True
        )
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()

    def variables(self, source: str) -> set[str]:
        """Check ``source`` and return the variables it reads."""
        ast = self._parse_checked(source)
        return set(meta.find_undeclared_variables(ast))

    def render(self, source: str, variables: dict[str, Any]) -> str:
        template = self._compiled.get(source)
        if template is None:
            self._parse_checked(source)
            template = self._env.from_string(source)
            with self._lock:
                if len(self._compiled) > 1024:
                    self._compiled.clear()
                self._compiled[source] = template
        try:
            return str(template.render(variables))
        except SecurityError as exc:
            raise PromptTemplateError(f"template refused by the sandbox: {exc}") from exc
        except TemplateError as exc:
            raise PromptTemplateError(f"template failed to render: {exc}") from exc

    def _parse_checked(self, source: str) -> nodes.Template:
        if len(source) > MAX_TEMPLATE_CHARS:
            raise PromptTemplateError(f"template is {len(source)} characters, over the {MAX_TEMPLATE_CHARS} limit")
        try:
            ast = self._env.parse(source)
        except TemplateError as exc:
            raise PromptTemplateError(f"template syntax error: {exc}") from exc
        for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
            if isinstance(node, nodes.Getattr) and _unsafe_name(node.attr):
                raise PromptTemplateError(f"template refused: access to the internal attribute {node.attr!r}")
            if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and _unsafe_name(node.arg.value):
                raise PromptTemplateError(f"template refused: access to the internal item {node.arg.value!r}")
            if isinstance(node, nodes.Filter) and node.name == "attr":
                raise PromptTemplateError("template refused: the 'attr' filter is not allowed in prompts")
        return ast
