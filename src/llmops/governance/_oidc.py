"""OpenID Connect sign-in: the authorization-code flow with PKCE against any provider, and ID-token validation.

>>> login = oidc.start(redirect_url="https://llmops.example.com/auth/callback")    # doctest: +SKIP
>>> # send the browser to login.url; keep login.state, .nonce, .verifier until it comes back
>>> claims = await oidc.finish(code, login.verifier, login.nonce, redirect_url=...)  # doctest: +SKIP

The provider's endpoints come from its discovery document (``ISSUER/.well-known/openid-configuration``), read once;
its signing keys (JWKS) are read once and again when a token names a key not seen yet (key rotation). A token is
accepted only with a valid signature by one of those keys in one of the allowed algorithms (never ``none``, never
an HMAC keyed by the public key), this issuer, this client as audience, an expiry in the future and the nonce of
this sign-in. Every refusal is an `OidcError` that says what was wrong, never the token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from llmops._settings import OidcSettings

__all__ = ["OidcClient", "OidcError", "PendingLogin", "ProviderUnavailableError"]

_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_MAX_DOCUMENT_BYTES = 1_000_000
_CLOCK_SKEW_S = 60


class OidcError(Exception):
    """A sign-in that cannot complete: the provider's answer or its token is invalid."""


class ProviderUnavailableError(OidcError):
    """The provider cannot be reached, or answered with an error status."""


@dataclass(frozen=True)
class PendingLogin:
    """A sign-in sent to the provider: where to send the browser and what to check when it comes back."""

    url: str
    state: str
    nonce: str
    verifier: str


class OidcClient:
    """One provider, as configured in ``auth.oidc``."""

    def __init__(self, settings: OidcSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        try:
            import jwt  # noqa: F401  (checked here so a missing extra fails at start, not at the first sign-in)
        except ImportError as exc:
            raise RuntimeError("OIDC sign-in needs PyJWT with cryptography: pip install 'llmops[oidc]'") from exc
        self.settings = settings
        self._transport = transport
        self._discovery: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def start(self, *, redirect_url: str) -> PendingLogin:
        """A new sign-in: the provider's authorization URL with a fresh state, nonce and PKCE challenge."""
        discovery = await self._discover()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": redirect_url,
                "scope": " ".join(self.settings.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(discovery["authorization_endpoint"])
        separator = "&" if "?" in endpoint else "?"
        return PendingLogin(f"{endpoint}{separator}{query}", state, nonce, verifier)

    async def finish(self, code: str, verifier: str, nonce: str, *, redirect_url: str) -> dict[str, Any]:
        """Exchange the authorization code for tokens and return the validated ID token's claims."""
        discovery = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_url,
            "code_verifier": verifier,
            "client_id": self.settings.client_id,
        }
        secret = self.settings.secret()
        auth = httpx.BasicAuth(self.settings.client_id, secret) if secret is not None else None
        tokens = await self._fetch_json(str(discovery["token_endpoint"]), "token", data=form, auth=auth)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcError("the provider's token response has no id_token (is 'openid' among the scopes?)")
        return await self._validate(id_token, nonce)

    async def _validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        import jwt

        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token is malformed: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in self.settings.algorithms:
            allowed = ", ".join(self.settings.algorithms)
            raise OidcError(f"the ID token is signed with {algorithm!r}; allowed: {allowed} (auth.oidc.algorithms)")
        key = await self._signing_key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key=key,
                algorithms=[algorithm],
                audience=self.settings.client_id,
                issuer=self.settings.issuer,
                leeway=_CLOCK_SKEW_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token was refused: {exc}") from exc
        if not secrets.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise OidcError("the ID token's nonce is not this sign-in's (a replayed or injected token)")
        return claims

    async def _signing_key(self, kid: Any) -> Any:
        import jwt

        for refresh in (False, True):
            jwks = await self._keys(refresh=refresh)
            try:
                keys = jwt.PyJWKSet.from_dict(jwks)
            except jwt.PyJWTError as exc:
                raise OidcError(f"the provider's JWKS holds no usable key: {exc}") from exc
            usable = [k for k in keys.keys if k.public_key_use in (None, "sig")]
            if kid is not None:
                usable = [k for k in usable if k.key_id == kid]
            elif len(usable) > 1:
                raise OidcError("the ID token names no key (kid) and the provider has several")
            if usable:  # a key of another type than the algorithm's is refused by jwt.decode
                return usable[0].key
        raise OidcError(f"the ID token is signed with key {kid!r}, which the provider does not publish")

    async def _discover(self) -> dict[str, Any]:
        async with self._lock:
            if self._discovery is None:
                url = f"{self.settings.issuer}/.well-known/openid-configuration"
                document = await self._fetch_json(url, "discovery")
                missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if k not in document]
                if missing:
                    raise OidcError(f"the provider's discovery document lacks {', '.join(missing)}")
                if str(document.get("issuer", "")).rstrip("/") != self.settings.issuer:
                    issuer = document.get("issuer")
                    raise OidcError(f"the provider says its issuer is {issuer!r}, not {self.settings.issuer!r}")
                self._discovery = document
            return self._discovery

    async def _keys(self, *, refresh: bool) -> dict[str, Any]:
        discovery = await self._discover()
        async with self._lock:
            if self._jwks is None or refresh:
                self._jwks = await self._fetch_json(str(discovery["jwks_uri"]), "JWKS")
            return self._jwks

    async def _fetch_json(
        self, url: str, what: str, *, data: dict[str, str] | None = None, auth: httpx.Auth | None = None
    ) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=_TIMEOUT, transport=self._transport, follow_redirects=False) as client:
            try:
                if data is None:
                    response = await client.get(url)
                else:
                    response = await client.post(url, data=data, auth=auth or httpx.USE_CLIENT_DEFAULT)
            except httpx.HTTPError as exc:
                raise ProviderUnavailableError(
                    f"the identity provider's {what} endpoint is unreachable: {exc}"
                ) from exc
        if len(response.content) > _MAX_DOCUMENT_BYTES:
            raise OidcError(f"the identity provider's {what} response is too large")
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != 200:
            detail = document.get("error_description") or document.get("error") if isinstance(document, dict) else ""
            message = f"the identity provider's {what} endpoint answered {response.status_code} {detail}"
            raise ProviderUnavailableError(message.strip())
        if not isinstance(document, dict):
            raise OidcError(f"the identity provider's {what} response is not a JSON object")
        return document
