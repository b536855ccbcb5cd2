"""The prompt SDK for applications that reach llmops over HTTP: cached, and resilient to an unreachable server.

>>> prompts = PromptClient("http://127.0.0.1:8000", environment="prod", ttl=10)       # doctest: +SKIP
>>> version = prompts.get("support-answer")          # from the server, then from the cache for 10 s
>>> messages = prompts.render(version, {"question": "Hi", "context": "..."})         # doctest: +SKIP
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from llmops.prompts._cache import StaleCache
from llmops.prompts._model import PromptVersion, check_variable_values
from llmops.prompts._template import TemplateRenderer

__all__ = ["PromptClient"]


class _ServerUnavailableError(RuntimeError):
    pass


class PromptClient:
    """``get`` caches each (name, environment, label) for ``ttl`` seconds and keeps serving the last good version,
    with a warning in the log, while the server cannot be reached or answers 5xx."""

    def __init__(
        self,
        base_url: str,
        *,
        environment: str | None = None,
        ttl: float = 10.0,
        timeout: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)
        self.environment = environment
        self._cache: StaleCache[PromptVersion] = StaleCache(ttl, (httpx.TransportError, _ServerUnavailableError))
        self._renderer = TemplateRenderer()

    def get(self, name: str, *, label: str = "production", environment: str | None = None) -> PromptVersion:
        env = environment or self.environment
        return self._cache.get((name, env, label), lambda: self._fetch(name, label, env))

    def _fetch(self, name: str, label: str, environment: str | None) -> PromptVersion:
        from llmops.prompts._registry import PromptNotFoundError

        params = {"label": label, **({"environment": environment} if environment else {})}
        response = self._http.get(f"/api/prompts/{name}/resolve", params=params)
        if response.status_code >= 500:
            raise _ServerUnavailableError(f"server answered {response.status_code}")
        if response.status_code == 404:
            raise PromptNotFoundError(response.json().get("detail", f"no prompt {name!r}"))
        response.raise_for_status()
        return _version(response.json())

    def render(self, version: PromptVersion, variables: dict[str, Any]) -> list[dict[str, str]]:
        """Fill the version's messages locally, in the same sandbox the server uses."""
        check_variable_values(version, variables)
        return [
            {"role": m["role"], "content": self._renderer.render(m["content"], variables)} for m in version.messages
        ]

    def close(self) -> None:
        self._http.close()


def _version(data: dict[str, Any]) -> PromptVersion:
    return PromptVersion(
        name=data["name"],
        version=int(data["version"]),
        messages=list(data["messages"]),
        variables=dict(data["variables"]),
        params=dict(data["params"]),
        examples=list(data["examples"]),
        tags=list(data["tags"]),
        content_hash=data["content_hash"],
        author=data["author"],
        commit_message=data["commit_message"],
        created_at=datetime.fromisoformat(data["created_at"]),
    )
