"""HTTP server: REST API, OpenAI-compatible API, web page."""

from llmops.server._app import create_app

__all__ = ["create_app"]
