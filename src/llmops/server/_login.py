"""Sign-in to the web UI through OpenID Connect (``auth.oidc``): ``/auth/login``, ``/auth/callback``,
``/auth/logout``, and the session cookie the access guard accepts.

A session is an API key of the signed-in user in the project chosen at sign-in (the default project unless
``/auth/login?project=P``), expiring after ``auth.oidc.session_hours``, held in the ``llmops_session`` cookie
(HttpOnly, SameSite=Lax, Secure over https). Everything keys have comes with it: hashed at rest, revocable (sign-out,
``llmops keys revoke``, disabling the user), audited, shared by every replica. Between ``/auth/login`` and the
callback, the state, nonce and PKCE verifier travel in a short-lived cookie of their own, so any replica can finish
a sign-in another one started.
"""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import secrets
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import cookie_parser

from llmops.governance import AccessControl, InvalidKeyError
from llmops.governance._oidc import OidcClient, OidcError, ProviderUnavailableError

__all__ = ["SESSION_COOKIE", "SESSION_SCRIPT", "WebLogin", "login_router", "session_key"]

SESSION_COOKIE = "llmops_session"
_LOGIN_COOKIE = "llmops_login"
_LOGIN_TTL_S = 600
SESSION_SCRIPT = """<script>
// Shows who is signed in, with a sign-out button, in the page's #session element (web sessions only).
fetch("/api/whoami").then((r) => (r.ok ? r.json() : null)).then((me) => {
  const box = document.getElementById("session");
  if (!me || !box || !(me.key_name || "").startsWith("web session")) return;
  box.textContent = `${me.principal} · ${me.project} `;
  const out = document.createElement("button");
  out.textContent = "sign out";
  out.onclick = () => fetch("/auth/logout", { method: "POST" }).then(() => location.assign("/auth/login"));
  box.append(out);
});
</script>"""
logger = logging.getLogger("llmops.server")


def session_key(cookie_header: str) -> str | None:
    """The session's key in a ``Cookie`` header, if any."""
    if not cookie_header or SESSION_COOKIE not in cookie_header:
        return None
    return cookie_parser(cookie_header).get(SESSION_COOKIE) or None


class WebLogin:
    """The sign-in flow for one server: ``oidc`` None when sign-in is not configured."""

    def __init__(self, access: AccessControl, oidc: OidcClient | None, *, keys_required: bool) -> None:
        self.access = access
        self.oidc = oidc
        self._required = keys_required

    async def page_redirect(self, request: Request) -> Response | None:
        """Where a page request without a live session goes when sign-in is on and keys are required."""
        if self.oidc is None or not self._required:
            return None
        secret = session_key(request.headers.get("cookie", ""))
        if secret is not None and await self._live(secret):
            return None
        return RedirectResponse(f"/auth/login?next={quote(request.url.path)}", status_code=303)

    async def _live(self, secret: str) -> bool:
        try:
            await self.access.identify_async(secret)
        except InvalidKeyError:
            return False
        return True


def login_router(login: WebLogin) -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["sign-in"], include_in_schema=False)

    @router.get("/login")
    async def start(request: Request, next: str = "/", project: str | None = None) -> Response:
        """Send the browser to the identity provider."""
        if login.oidc is None:
            return _failed("sign-in is not configured on this server (auth.oidc)", 404)
        try:
            pending = await login.oidc.start(redirect_url=_redirect_url(request, login))
        except OidcError as exc:
            logger.warning("OIDC sign-in cannot start: %s", exc)
            return _failed(str(exc), 502)
        flow = {
            "state": pending.state,
            "nonce": pending.nonce,
            "verifier": pending.verifier,
            "next": _local_path(next),
            "project": project or login.access.default_project,
        }
        response = RedirectResponse(pending.url, status_code=303)
        _set_cookie(request, response, _LOGIN_COOKIE, _encode(flow), _LOGIN_TTL_S, path="/auth")
        return response

    @router.get("/callback", name="oidc_callback")
    async def callback(request: Request) -> Response:
        """The provider sends the browser back here with a code; exchange it, check the token, open a session."""
        if login.oidc is None:
            return _failed("sign-in is not configured on this server (auth.oidc)", 404)
        params = request.query_params
        if "error" in params:
            return _failed(f"the identity provider refused: {params.get('error_description') or params['error']}", 403)
        flow = _decode(request.cookies.get(_LOGIN_COOKIE, ""))
        if flow is None or not secrets.compare_digest(params.get("state", "").encode(), flow["state"].encode()):
            return _failed("this sign-in was not started here or has expired (state mismatch): start again", 400)
        if not params.get("code"):
            return _failed("the identity provider sent no authorization code", 400)
        settings = login.oidc.settings
        try:
            claims = await login.oidc.finish(
                params["code"], flow["verifier"], flow["nonce"], redirect_url=_redirect_url(request, login)
            )
        except OidcError as exc:
            logger.warning("OIDC sign-in refused: %s", exc)
            return _failed(str(exc), 502 if isinstance(exc, ProviderUnavailableError) else 403)
        principal = claims.get(settings.username_claim)
        if not isinstance(principal, str) or not principal:
            return _failed(f"the ID token has no {settings.username_claim!r} claim (auth.oidc.username_claim)", 403)
        if settings.username_claim == "email" and claims.get("email_verified") is False:
            return _failed(f"the identity provider has not verified {principal}", 403)
        try:
            _record, secret = await asyncio.to_thread(
                login.access.sign_in,
                principal,
                str(flow["project"]),
                hours=settings.session_hours,
                via=settings.issuer,
                add_unknown=settings.auto_create_users,
            )
        except (LookupError, ValueError) as exc:
            return _failed(str(exc.args[0] if exc.args else exc), 403)
        response = RedirectResponse(str(flow["next"]), status_code=303)
        _set_cookie(request, response, SESSION_COOKIE, secret, int(settings.session_hours * 3600), path="/")
        response.delete_cookie(_LOGIN_COOKIE, path="/auth")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        """End the session: its key is revoked, the cookie removed."""
        secret = session_key(request.headers.get("cookie", ""))
        key_id = await asyncio.to_thread(login.access.sign_out, secret) if secret else None
        response = JSONResponse({"signed_out": key_id is not None})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return router


def _redirect_url(request: Request, login: WebLogin) -> str:
    assert login.oidc is not None
    return login.oidc.settings.redirect_url or str(request.url_for("oidc_callback"))


def _local_path(target: str) -> str:
    """``target`` when it is a path on this server; "/" otherwise (no open redirect to another site)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int, *, path: str) -> None:
    secure = request.url.scheme == "https"
    response.set_cookie(name, value, max_age=max_age, path=path, secure=secure, httponly=True, samesite="lax")


def _encode(flow: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(flow)).decode()


def _decode(value: str) -> dict[str, Any] | None:
    try:
        flow = orjson.loads(base64.urlsafe_b64decode(value.encode()))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(flow, dict) or not all(isinstance(flow.get(k), str) for k in ("state", "nonce", "verifier")):
        return None
    return flow


def _failed(message: str, status: int) -> HTMLResponse:
    body = (
        "<!doctype html><meta charset=utf-8><title>Sign-in failed</title>"
        f"<p>Sign-in failed: {html.escape(message)}</p><p><a href='/auth/login'>Sign in again</a></p>"
    )
    return HTMLResponse(body, status_code=status)
