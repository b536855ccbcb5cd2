"""The HTTP application: the REST API, the OpenAI-compatible API and the web page, over one `Platform`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from llmops._platform import Platform
from llmops.server._anthropic_api import anthropic_router
from llmops.server._api import api_router
from llmops.server._limits import BodySizeLimit
from llmops.server._openai_api import openai_router
from llmops.server._prompts_api import prompts_router

__all__ = ["create_app"]

_PAGES = {"/": "index.html", "/prompts": "prompts.html"}


def create_app(platform: Platform) -> FastAPI:
    """The ASGI app. The caller owns ``platform`` and closes it."""
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # Upstream connection pools belong to this event loop: close them on it.
        await platform.gateway.aclose()

    app = FastAPI(title="llmops", version="0.1.0", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.include_router(openai_router(platform))
    app.include_router(anthropic_router(platform))
    app.include_router(api_router(platform))
    app.include_router(prompts_router(platform))
    static = resources.files("llmops.server") / "_static"
    pages = {path: (static / file).read_text(encoding="utf-8") for path, file in _PAGES.items()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return pages["/"]

    @app.get("/prompts", response_class=HTMLResponse, include_in_schema=False)
    async def prompts_page() -> str:
        return pages["/prompts"]

    app.add_middleware(BodySizeLimit, max_bytes=platform.settings.max_request_bytes)
    return app
