"""The feedback SDK for applications that reach llmops over HTTP.

>>> feedback = FeedbackClient("http://127.0.0.1:8000")                          # doctest: +SKIP
>>> feedback.thumbs(request_id, up=False, comment="wrong number of days")        # doctest: +SKIP
>>> feedback.correct(request_id, "New employees get 15 days.", user="u-42")      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import httpx

from llmops.loop._feedback import FeedbackError, UnknownRequestError

__all__ = ["FeedbackClient"]


class FeedbackClient:
    """Sends feedback on a response by its request id (the ``x-request-id`` header, or ``request_id`` in the body).

    Raises `FeedbackError` for feedback the server refuses (422) and `UnknownRequestError` for a request it never
    served (404); a server that cannot be reached raises ``httpx.TransportError``.
    """

    def __init__(self, base_url: str, *, timeout: float = 5.0, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    def thumbs(
        self, request_id: str, *, up: bool, comment: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        return self.send(request_id, kind="thumbs", value="up" if up else "down", comment=comment, user=user)

    def rate(
        self, request_id: str, rating: int, *, comment: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        return self.send(request_id, kind="rating", value=rating, comment=comment, user=user)

    def correct(self, request_id: str, correction: str, *, user: str | None = None) -> dict[str, Any]:
        return self.send(request_id, kind="correction", correction=correction, user=user)

    def flag(
        self, request_id: str, flag: str, *, comment: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        return self.send(request_id, kind="flag", flag=flag, comment=comment, user=user)

    def send(self, request_id: str, *, kind: str, **fields: Any) -> dict[str, Any]:
        body = {"request_id": request_id, "kind": kind, **{k: v for k, v in fields.items() if v is not None}}
        response = self._http.post("/api/feedback", json=body)
        if response.status_code == 404:
            raise UnknownRequestError(_detail(response))
        if response.status_code == 422:
            raise FeedbackError(_detail(response))
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def close(self) -> None:
        self._http.close()


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text
    return detail if isinstance(detail, str) else str(detail)
