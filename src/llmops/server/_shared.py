"""What the OpenAI- and Anthropic-compatible surfaces share: error responses and who the caller is."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from fastapi.responses import Response

from llmops._platform import Platform
from llmops.gateway import (
    AuthenticationError,
    Caller,
    LimitExceededError,
    ProviderError,
    UnknownModelError,
    Usage,
    identify,
)
from llmops.governance import InvalidKeyError
from llmops.governance._keys import KEY_PREFIX
from llmops.server._limits import last_header

__all__ = [
    "GATEWAY_ERRORS",
    "ErrorResponse",
    "authorization_of",
    "caller_from",
    "gateway_error",
    "openai_error",
    "usage_dict",
]

GATEWAY_ERRORS = (ProviderError, UnknownModelError, LimitExceededError, AuthenticationError)


class ErrorResponse:
    """A JSON error: status, body and extra headers, sendable by FastAPI routes and bare ASGI handlers alike."""

    def __init__(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = orjson.dumps(payload)
        self.headers = headers or {}

    def fastapi(self) -> Response:
        return Response(self.body, status_code=self.status, media_type="application/json", headers=self.headers)


def openai_error(
    status: int, message: str, *, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> ErrorResponse:
    return ErrorResponse(status, {"error": {"message": message, "type": kind, "code": code}}, headers)


def gateway_error(exc: Exception) -> ErrorResponse:
    """The OpenAI-shaped error response for a gateway failure."""
    if isinstance(exc, LimitExceededError):
        return openai_error(429, str(exc), kind="rate_limit_exceeded", code="rate_limit_exceeded",
                            headers={"retry-after": str(exc.retry_after)})  # fmt: skip
    if isinstance(exc, AuthenticationError):
        return openai_error(401, str(exc), kind="authentication_error", code="invalid_api_key")
    if isinstance(exc, UnknownModelError):
        return openai_error(404, str(exc.args[0]), kind="invalid_request_error", code="model_not_found")
    if isinstance(exc, ProviderError) and exc.status in (400, 413, 422):
        return openai_error(400, str(exc), kind="invalid_request_error")
    return openai_error(502, str(exc), kind="upstream_error")


def authorization_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """A request's ``Authorization`` header (the last one, as a dict of the headers holds), without decoding the
    others."""
    authorization = last_header(headers, b"authorization")
    return None if authorization is None else authorization.decode("latin-1")


def caller_from(
    platform: Platform, authorization: str | None, user: str | None, metadata: dict[str, str] | None
) -> Caller:
    """The caller of a request, from its ``Authorization: Bearer`` header and its ``user`` / metadata.

    A stored key (``llmops keys create``; the access guard has verified it) names its principal, team and app; a
    key from ``gateway.api_keys`` in the settings is checked here."""
    authorization = authorization or ""
    bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
    if bearer is not None and bearer.startswith(KEY_PREFIX):
        try:
            key = platform.access.keys.authenticate(bearer)
        except InvalidKeyError as exc:
            raise AuthenticationError(str(exc)) from exc
        tags = tuple(filter(None, (metadata or {}).get("tags", "").split(",")))
        return Caller(key_name=key.id, user=user or key.principal, team=key.team, app=key.app, tags=tags)
    gateway = platform.settings.gateway
    return identify(bearer, gateway.api_keys, require_key=gateway.require_api_key, user=user, metadata=metadata)


def usage_dict(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
