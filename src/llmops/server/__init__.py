"""HTTP server: REST API, OpenAI-compatible API, web page."""

from llmops.server._app import app_from_settings, create_app, tune_garbage_collector
from llmops.server._protocol import uvicorn_options

__all__ = ["app_from_settings", "create_app", "tune_garbage_collector", "uvicorn_options"]
