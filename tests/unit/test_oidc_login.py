"""Sign-in to the web UI through OpenID Connect, against a real provider process (tests/oidc_provider.py) and a
real server: the code flow with PKCE, the session cookie the guard accepts, sign-out, and every way a token or a
flow can be wrong."""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmops import Platform, Settings
from llmops._settings import AuthSettings, OidcSettings
from llmops.server import create_app
from llmops.testing import HashEmbedder, ScriptedProvider

from ..helpers import serve_in_thread
from ..oidc_provider import CLIENT_ID, CLIENT_SECRET, TAMPERS, FakeIdentityProvider, running_identity_provider

ANA = "ana@example.com"


@dataclass
class SignIn:
    platform: Platform
    idp: FakeIdentityProvider
    base: str


def _settings(tmp_path: Path, database_url: str, issuer: str, **oidc: object) -> Settings:
    login = OidcSettings(issuer=issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **oidc)  # type: ignore[arg-type]
    return Settings(data_dir=tmp_path / "data", database_url=database_url, auth=AuthSettings(required=True, oidc=login))


@contextmanager
def _serving(settings: Settings, scripted: ScriptedProvider, idp: FakeIdentityProvider) -> Iterator[SignIn]:
    platform = Platform(settings, embedder=HashEmbedder(), providers={"smollm2-135m-instruct": scripted})
    platform.access.principals.add(ANA, by="admin")
    platform.access.roles.grant(ANA, "editor", by="admin", project="default")
    try:
        with serve_in_thread(create_app(platform)) as base:
            yield SignIn(platform, idp, base)
    finally:
        platform.close()


@pytest.fixture
def signin(tmp_path: Path, database_url: str, scripted: ScriptedProvider) -> Iterator[SignIn]:
    with (
        running_identity_provider() as idp,
        _serving(_settings(tmp_path, database_url, idp.issuer), scripted, idp) as s,
    ):
        yield s


def _browser(base: str) -> httpx.Client:
    """A browser: follows redirects, keeps cookies."""
    return httpx.Client(base_url=base, follow_redirects=True, timeout=10)


def _open(base: str, page: str = "/observe") -> httpx.Response:
    """Open a page in a fresh browser (no session), following the whole sign-in."""
    with _browser(base) as browser:
        return browser.get(page)


def test_a_page_sends_the_browser_through_the_provider_and_back_signed_in(signin: SignIn) -> None:
    with _browser(signin.base) as browser:
        page = browser.get("/observe")
        assert page.status_code == 200 and "<h1>Observe</h1>" in page.text
        assert 'fetch("/api/whoami")' in page.text and "llmops:session" not in page.text  # who is signed in
        hops = [str(r.url) for r in page.history]
        assert hops[0].endswith("/observe") and hops[1].startswith(f"{signin.base}/auth/login?next=/observe")
        assert hops[2].startswith(f"{signin.idp.issuer}/authorize?") and "/auth/callback?code=" in hops[3]
        session = browser.cookies.get("llmops_session")
        assert session is not None and session.startswith("llmops_")
        set_cookie = page.history[3].headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie
        me = browser.get("/api/whoami").json()
        assert me["principal"] == ANA and me["project"] == "default" and "write" in me["permissions"]
        assert me["key_name"] == f"web session ({signin.idp.issuer})"

        # Changes need the page's own origin: a cross-site form post rides the cookie and is refused.
        prompt, path = {"messages": [{"role": "system", "content": "Hi"}]}, "/api/prompts/greeting/versions"
        forged = browser.post(path, json=prompt, headers={"origin": "https://evil.example"})
        no_origin = browser.post(path, json=prompt)
        made = browser.post(path, json=prompt, headers={"origin": signin.base})
        assert forged.status_code == 403 and forged.headers["x-llmops-denied"] == "csrf"
        assert no_origin.status_code == 403 and made.status_code in (200, 201), made.text
        assert made.json()["author"] == ANA

        out = browser.post("/auth/logout")
        assert out.json() == {"signed_out": True} and "llmops_session" not in browser.cookies
    after = httpx.get(f"{signin.base}/api/whoami", cookies={"llmops_session": session})
    assert after.status_code == 401 and "sign in again" in after.json()["detail"]
    keys = signin.platform.access.keys.list(principal=ANA)
    assert [k["state"] for k in keys] == ["revoked"]
    entries = signin.platform.audit.entries(action="key.")
    assert [(e["action"], e["actor"]) for e in entries] == [("key.create", ANA), ("key.revoke", ANA)]


def test_the_session_lasts_as_configured_and_ends_when_the_user_is_disabled(signin: SignIn) -> None:
    with _browser(signin.base) as browser:
        assert browser.get("/").status_code == 200
        (key,) = signin.platform.access.keys.list(principal=ANA)
        assert key["expires_at"] is not None and key["project"] == "default"
        signin.platform.access.principals.disable(ANA, by="admin")
        assert browser.get("/api/whoami").status_code == 401
        again = browser.get("/observe")  # back to the provider, which vouches for a user who may no longer sign in
        assert again.status_code == 403 and "may not sign in (disabled)" in again.text
        assert "llmops_session" not in again.headers.get("set-cookie", "")


def test_sign_in_to_another_project_and_only_back_to_this_server(signin: SignIn) -> None:
    signin.platform.access.projects.create("support", by="admin")
    signin.platform.access.roles.grant(ANA, "viewer", by="admin", project="support")
    with _browser(signin.base) as browser:
        landed = browser.get("/auth/login", params={"project": "support", "next": "//evil.example/x"})
        assert landed.status_code == 200 and str(landed.url) == f"{signin.base}/"
        me = browser.get("/api/whoami").json()
        assert me["project"] == "support" and me["permissions"] == ["read"]


@pytest.mark.parametrize("tamper", TAMPERS)
def test_a_wrong_token_opens_no_session(signin: SignIn, tamper: str) -> None:
    signin.idp.tamper = tamper
    with _browser(signin.base) as browser:
        page = browser.get("/observe")
        assert page.status_code in (403, 502) and "Sign-in failed" in page.text, page.text
        assert "llmops_session" not in browser.cookies
    expected = {
        "audience": "Audience",
        "issuer": "issuer",
        "expired": "expired",
        "nonce": "nonce",
        "foreign-key": "Signature verification failed",
        "alg-none": "'none'",
        "hs256": "'HS256'",
        "no-id-token": "no id_token",
        "token-500": "answered 500",
    }[tamper]
    assert expected in html.unescape(page.text), page.text
    assert signin.platform.access.keys.list() == []


def test_an_unknown_user_is_refused_unless_users_are_added_and_then_needs_a_role(signin: SignIn) -> None:
    signin.idp.user = {"sub": "u-2", "email": "bob@example.com", "email_verified": True}
    page = _open(signin.base)
    assert page.status_code == 403 and "'bob@example.com' is not a user here" in html.unescape(page.text)

    signin.idp.user = {"sub": "u-3", "email": "eve@example.com", "email_verified": False}
    page = _open(signin.base)
    assert page.status_code == 403 and "has not verified eve@example.com" in page.text
    assert signin.platform.access.principals.get("bob@example.com") is None


def test_users_added_at_sign_in_wait_for_a_role(tmp_path: Path, database_url: str, scripted: ScriptedProvider) -> None:
    with running_identity_provider() as idp:
        settings = _settings(tmp_path, database_url, idp.issuer, auto_create_users=True, username_claim="sub")
        with _serving(settings, scripted, idp) as signin:
            idp.user = {"sub": "u-2", "email": "bob@example.com"}
            page = _open(signin.base)
            assert page.status_code == 403 and "has no role in project" in page.text
            assert signin.platform.access.principals.get("u-2") is not None
            signin.platform.access.roles.grant("u-2", "viewer", by="admin", project="default")
            with _browser(signin.base) as browser:
                assert browser.get("/").status_code == 200
                assert browser.get("/api/whoami").json()["principal"] == "u-2"


def test_forged_and_replayed_callbacks_are_refused(signin: SignIn) -> None:
    with httpx.Client(base_url=signin.base) as browser:
        direct = browser.get("/auth/callback", params={"code": "x", "state": "y"})
        assert direct.status_code == 400 and "state mismatch" in direct.text
        started = browser.get("/auth/login")
        assert started.status_code == 303
        authorized = httpx.get(started.headers["location"])  # the provider redirects back with code and state
        callback = authorized.headers["location"].removeprefix(signin.base)
        wrong_state = browser.get(callback.replace("state=", "state=x"))
        assert wrong_state.status_code == 400
        first = browser.get(callback)
        assert first.status_code == 303 and "llmops_session" in browser.cookies
        browser.cookies.delete("llmops_session")
        replayed = browser.get(callback)  # the login cookie is gone, and the provider honours a code once
        assert replayed.status_code == 400
        refused = browser.get("/auth/callback", params={"error": "access_denied", "error_description": "no <b>"})
        assert refused.status_code == 403 and "no &lt;b&gt;" in refused.text


def test_an_unreachable_provider_is_a_clear_error(
    tmp_path: Path, database_url: str, scripted: ScriptedProvider
) -> None:
    from ..helpers import free_port

    settings = _settings(tmp_path, database_url, f"http://127.0.0.1:{free_port()}")
    platform = Platform(settings, embedder=HashEmbedder(), providers={"smollm2-135m-instruct": scripted})
    try:
        with serve_in_thread(create_app(platform)) as base:
            page = httpx.get(f"{base}/auth/login")
            api = httpx.get(f"{base}/api/whoami")
    finally:
        platform.close()
    assert page.status_code == 502 and "unreachable" in page.text
    assert api.status_code == 401 and api.headers["x-llmops-denied"] == "authentication"


def test_without_sign_in_configured_the_routes_say_so(sqlite_platform: Platform) -> None:
    with serve_in_thread(create_app(sqlite_platform)) as base:
        login = httpx.get(f"{base}/auth/login")
        page = httpx.get(f"{base}/observe")
    assert login.status_code == 404 and "not configured" in login.text
    assert page.status_code == 200  # the laptop default: no keys, no sign-in


def test_sign_in_is_refused_without_required_keys() -> None:
    login = OidcSettings(issuer="https://idp.example.com", client_id="x")
    with pytest.raises(ValueError, match=r"auth\.oidc needs auth\.required"):
        AuthSettings(oidc=login)


def test_the_issuer_must_be_https_except_on_loopback() -> None:
    with pytest.raises(ValueError, match="must be an https URL"):
        OidcSettings(issuer="http://idp.example.com", client_id="x")
    assert OidcSettings(issuer="https://idp.example.com/", client_id="x").issuer == "https://idp.example.com"
