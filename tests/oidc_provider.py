"""A small OpenID Connect provider for tests: discovery, JWKS, an authorize endpoint that signs the configured user
in at once, and a token endpoint that checks the client secret, the code, the redirect URI and the PKCE verifier
before it returns an RS256-signed ID token. ``tamper`` makes the next token wrong in one named way."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .helpers import serve_in_thread

CLIENT_ID = "llmops-ui"
CLIENT_SECRET = "s3cret-of-the-client"
TAMPERS = ("audience", "issuer", "expired", "nonce", "foreign-key", "alg-none", "hs256", "no-id-token", "token-500")


class FakeIdentityProvider:
    def __init__(self) -> None:
        self.issuer = ""
        self.user: dict[str, Any] = {"sub": "u-1", "email": "ana@example.com", "email_verified": True}
        self.tamper: str | None = None
        self.token_requests = 0
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(4)
        self._codes: dict[str, dict[str, str]] = {}
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _discovery(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
            }
        )

    async def _jwks(self, _request: Request) -> Response:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**public, "kid": self._kid, "use": "sig", "alg": "RS256"}]})

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        assert params["response_type"] == "code" and params["code_challenge_method"] == "S256"
        assert params["client_id"] == CLIENT_ID and "openid" in params["scope"].split()
        code = secrets.token_urlsafe(16)
        self._codes[code] = dict(params)
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode({'code': code, 'state': params['state']})}")

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = dict(parse_qsl((await request.body()).decode()))  # no python-multipart needed for a urlencoded form
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        issued = self._codes.pop(form.get("code", ""), None)  # a code works once
        if issued is None or form.get("redirect_uri") != issued["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown code"}, status_code=400)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != issued["code_challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE failed"}, status_code=400)
        tamper, self.tamper = self.tamper, None
        if tamper == "token-500":
            return JSONResponse({"error": "server_error"}, status_code=500)
        if tamper == "no-id-token":
            return JSONResponse({"access_token": "a", "token_type": "Bearer"})
        return JSONResponse({"access_token": "a", "token_type": "Bearer", "id_token": self._id_token(issued, tamper)})

    def _id_token(self, issued: dict[str, str], tamper: str | None) -> str:
        now = int(time.time())
        claims = {
            **self.user,
            "iss": "https://evil.example" if tamper == "issuer" else self.issuer,
            "aud": "another-client" if tamper == "audience" else CLIENT_ID,
            "iat": now - (7200 if tamper == "expired" else 0),
            "exp": now - 3600 if tamper == "expired" else now + 300,
            "nonce": "another-nonce" if tamper == "nonce" else issued["nonce"],
        }
        headers = {"kid": self._kid}
        if tamper == "alg-none":
            return jwt.encode(claims, None, algorithm="none", headers=headers)
        if tamper == "hs256":  # the classic confusion attack: HMAC keyed by the provider's public key (by hand:
            # PyJWT refuses to make such a token)
            public = self._key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", **headers}).encode())
            body = _b64(json.dumps(claims).encode())
            signature = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
            return f"{head}.{body}.{_b64(signature)}"
        if tamper == "foreign-key":
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return jwt.encode(claims, other, algorithm="RS256", headers=headers)
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@contextmanager
def running_identity_provider() -> Iterator[FakeIdentityProvider]:
    provider = FakeIdentityProvider()
    with serve_in_thread(provider.app) as base:
        provider.issuer = base
        yield provider
