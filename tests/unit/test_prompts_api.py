"""The prompt registry over HTTP, through a real server and httpx."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from llmops import Platform
from llmops.server import create_app

from ..helpers import serve_in_thread
from .test_prompts import SSTI


@pytest.fixture
def api(platform: Platform) -> Iterator[httpx.Client]:
    with serve_in_thread(create_app(platform)) as base, httpx.Client(base_url=base) as client:
        yield client


@pytest.fixture
def sqlite_api(sqlite_platform: Platform) -> Iterator[httpx.Client]:
    with serve_in_thread(create_app(sqlite_platform)) as base, httpx.Client(base_url=base) as client:
        yield client


def _as(user: str) -> dict[str, str]:
    return {"X-LLMOps-User": user}


BODY = {"messages": [{"role": "user", "content": "Hello {{ name }}"}], "variables": {"name": "str"}}


def test_create_read_render_and_diff(api: httpx.Client) -> None:
    created = api.post("/api/prompts/greet/versions", json=BODY, headers=_as("ana"))
    assert created.status_code == 201 and created.json()["version"] == 1 and created.json()["author"] == "ana"
    second = {**BODY, "messages": [{"role": "user", "content": "Hi {{ name }}!"}], "commit_message": "friendlier"}
    assert api.post("/api/prompts/greet/versions", json=second, headers=_as("bo")).json()["version"] == 2
    assert api.get("/api/prompts/greet/versions/2").json()["commit_message"] == "friendlier"
    preview = api.post("/api/prompts/greet/versions/2/render", json={"variables": {"name": "Cy"}})
    assert preview.json() == {"messages": [{"role": "user", "content": "Hi Cy!"}]}
    diff = api.get("/api/prompts/greet/diff", params={"a": 1, "b": 2}).json()["diff"]
    assert "-Hello {{ name }}" in diff and "+Hi {{ name }}!" in diff
    names = [p["name"] for p in api.get("/api/prompts").json() if not p["name"].startswith("judge-")]
    assert names == ["greet", "rag-default"]


def test_changes_need_an_actor(api: httpx.Client) -> None:
    response = api.post("/api/prompts/greet/versions", json=BODY)
    assert response.status_code == 400 and "X-LLMOps-User" in response.json()["detail"]


@pytest.mark.parametrize("payload", SSTI)
def test_hostile_templates_are_refused_on_create_and_preview(sqlite_api: httpx.Client, payload: str) -> None:
    body = {"messages": [{"role": "user", "content": payload}]}
    created = sqlite_api.post("/api/prompts/evil/versions", json=body, headers=_as("mallory"))
    assert created.status_code == 422 and "refused" in created.json()["detail"]
    # A preview renders a stored version with caller-supplied values: values are data, never templates.
    sqlite_api.post("/api/prompts/greet/versions", json=BODY, headers=_as("ana"))
    preview = sqlite_api.post("/api/prompts/greet/versions/1/render", json={"variables": {"name": payload}})
    assert preview.json()["messages"][0]["content"] == f"Hello {payload}"


def test_labels_history_rollback_and_resolve(api: httpx.Client) -> None:
    api.post("/api/prompts/greet/versions", json=BODY, headers=_as("ana"))
    second = {**BODY, "messages": [{"role": "user", "content": "Hi {{ name }}!"}]}
    api.post("/api/prompts/greet/versions", json=second, headers=_as("ana"))
    for version in (1, 2):
        moved = api.put("/api/prompts/greet/labels/production", json={"version": version, "environment": "prod"},
                        headers=_as("ana"))  # fmt: skip
        assert moved.status_code == 200
    assert api.get("/api/prompts/greet/resolve", params={"environment": "prod"}).json()["version"] == 2
    rolled = api.post("/api/prompts/greet/labels/production/rollback", json={"environment": "prod", "reason": "bad"},
                      headers=_as("ops"))  # fmt: skip
    assert rolled.json()["version"] == 1
    history = api.get("/api/prompts/greet/history").json()
    assert [(h["kind"], h["to_version"], h["actor"]) for h in history][-1] == ("rollback", 1, "ops")
    detail = api.get("/api/prompts/greet").json()
    assert detail["labels"]["prod"] == {"production": 1}
    assert api.get("/api/prompts/nope/resolve").status_code == 404


def test_protected_labels_go_through_approval(platform: Platform, api: httpx.Client) -> None:
    assert api.post("/api/roles", json={"user": "root", "role": "admin"}, headers=_as("root")).status_code == 201
    assert api.post("/api/roles", json={"user": "olga", "role": "approver"}, headers=_as("root")).status_code == 201
    denied = api.post("/api/roles", json={"user": "me", "role": "admin"}, headers=_as("mallory"))
    assert denied.status_code == 403
    policy = {"environment": "prod", "label": "production", "required_approvals": 1, "name": "prod-gate"}
    assert api.post("/api/prompt-policies", json=policy, headers=_as("olga")).status_code == 403
    assert api.post("/api/prompt-policies", json=policy, headers=_as("root")).status_code == 201
    api.post("/api/prompts/greet/versions", json=BODY, headers=_as("ana"))
    refused = api.put("/api/prompts/greet/labels/production", json={"version": 1, "environment": "prod"},
                      headers=_as("ana"))  # fmt: skip
    assert refused.status_code == 409 and "prod-gate" in refused.json()["detail"]
    request = api.post("/api/prompt-requests", json={"prompt_name": "greet", "label": "production", "version": 1,
                                                     "environment": "prod"}, headers=_as("ana")).json()  # fmt: skip
    assert [r["id"] for r in api.get("/api/prompt-requests").json()] == [request["id"]]
    self_approval = api.post(f"/api/prompt-requests/{request['id']}/approve", json={}, headers=_as("ana"))
    assert self_approval.status_code == 403
    approved = api.post(f"/api/prompt-requests/{request['id']}/approve", json={"comment": "ok"}, headers=_as("olga"))
    assert approved.json()["status"] == "applied"
    assert platform.prompts.resolve("greet", environment="prod").version == 1


def test_experiments_over_http(api: httpx.Client) -> None:
    api.post("/api/prompts/greet/versions", json=BODY, headers=_as("ana"))
    api.post("/api/prompts/greet/versions", json={**BODY, "messages": [{"role": "user", "content": "Yo {{ name }}"}]},
             headers=_as("ana"))  # fmt: skip
    api.put("/api/prompts/greet/labels/production", json={"version": 1, "environment": "dev"}, headers=_as("ana"))
    body = {"prompt_name": "greet", "environment": "dev", "variants": {"1": 0.5, "2": 0.5},
            "settings": {"primary_metric": "feedback", "min_samples": 10}}  # fmt: skip
    started = api.post("/api/prompt-experiments", json=body, headers=_as("ana"))
    assert started.status_code == 201, started.text
    experiment = started.json()
    detail = api.get(f"/api/prompt-experiments/{experiment['id']}").json()
    assert detail["status"] == "running" and detail["comparisons"][0]["test"] == "insufficient data"
    bad = api.post("/api/prompt-experiments", json={**body, "settings": {"alpha": 3}}, headers=_as("ana"))
    assert bad.status_code == 422
    stopped = api.post(f"/api/prompt-experiments/{experiment['id']}/stop", json={}, headers=_as("ana"))
    assert stopped.json()["status"] == "stopped"
    assert api.post("/api/outcomes", json={"request_id": "req_x", "metric": "feedback", "value": 1}).status_code == 404


def test_the_prompts_page_only_calls_routes_that_exist(api: httpx.Client) -> None:
    page = api.get("/prompts")
    assert page.status_code == 200
    for section in ("Versions", "Labels", "History", "Diff", "Pending approvals", "Experiments"):
        assert section in page.text
    routes = [
        re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$") for path in api.get("/openapi.json").json()["paths"]
    ]
    # Every API path the page's script builds, with ${...} interpolations standing for one path segment.
    called = {re.sub(r"\$\{[^}]+\}", "X", m).split("?")[0] for m in re.findall(r"[`\"](/api/[^`\"]*)[`\"]", page.text)}
    assert len(called) >= 6, called
    for path in called:
        assert any(route.match(path) for route in routes), f"the page calls {path}, which is no route"
