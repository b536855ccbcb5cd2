"""Every route × every role × an object of the caller's project and one of another project.

The route list comes from the app itself: a route without a case in ``CASES`` fails `test_every_route_has_a_case`,
and a route without an access rule stops the app from starting. Each request is real (a running server, stored
keys, objects made in two projects); the expected outcome follows from the route's rule and the role's
permissions: 403 for a missing permission, 404 (reported exactly as a missing object) for another project's
object, and, when allowed, whatever the handler answers, but never a refusal by the guard.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmops import Platform, Settings
from llmops._settings import AuthSettings, RagConfig
from llmops.evaluation import Example
from llmops.evaluation._tables import EvalExperimentRow
from llmops.governance import ALL_PROJECTS, PERMISSIONS
from llmops.guardrails import default_policy
from llmops.loop._tables import TriggerFiringRow
from llmops.server import create_app
from llmops.server._access_guard import route_keys
from llmops.server._access_rules import ROUTE_RULES, Rule
from llmops.server._app import _fastapi
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import SAMPLES
from ..helpers import serve_in_thread

LOCAL_MODEL = "smollm2-135m-instruct"

# Every route of the app, with the body it is sent (None: no body). Path parameters that name an object are filled
# with an object of the caller's project or of the other one (see ``_objects``); the others come from ``PARAMS``.
CASES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("GET", "/"): None,
    ("GET", "/prompts"): None,
    ("GET", "/observe"): None,
    ("GET", "/auth/login"): None,
    ("GET", "/auth/callback"): None,
    ("POST", "/auth/logout"): None,
    ("GET", "/healthz"): None,
    ("GET", "/docs"): None,
    ("GET", "/docs/oauth2-redirect"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/metrics"): None,
    ("POST", "/v1/chat/completions"): {"model": "own-rag", "messages": []},
    ("POST", "/v1/completions"): {},
    ("POST", "/v1/embeddings"): {},
    ("POST", "/v1/messages"): {},
    ("GET", "/v1/models"): None,
    ("POST", "/api/ask"): {},
    ("GET", "/api/answers/{request_id}"): None,
    ("GET", "/api/traces"): None,
    ("GET", "/api/traces/{request_id}"): None,
    ("GET", "/api/explain/{request_id}"): None,
    ("POST", "/api/replay/{request_id}"): {},
    ("GET", "/api/prompts"): None,
    ("GET", "/api/prompts/{name}"): None,
    ("GET", "/api/prompts/{name}/diff"): None,
    ("GET", "/api/prompts/{name}/history"): None,
    ("GET", "/api/prompts/{name}/resolve"): None,
    ("GET", "/api/prompts/{name}/versions/{version}"): None,
    ("POST", "/api/prompts/{name}/versions"): {},
    ("POST", "/api/prompts/{name}/versions/{version}/archive"): {},
    ("POST", "/api/prompts/{name}/versions/{version}/render"): {},
    ("POST", "/api/prompts/{name}/versions/{version}/stage"): {},
    ("PUT", "/api/prompts/{name}/labels/{label}"): {},
    ("POST", "/api/prompts/{name}/labels/{label}/rollback"): {},
    ("POST", "/api/prompts/{name}/checks"): {},
    ("GET", "/api/prompt-policies"): None,
    ("POST", "/api/prompt-policies"): {},
    ("GET", "/api/prompt-requests"): None,
    ("POST", "/api/prompt-requests"): {},
    ("POST", "/api/prompt-requests/{request_id}/apply"): {},
    ("POST", "/api/prompt-requests/{request_id}/approve"): {},
    ("POST", "/api/prompt-requests/{request_id}/reject"): {},
    ("GET", "/api/prompt-experiments"): None,
    ("POST", "/api/prompt-experiments"): {},
    ("GET", "/api/prompt-experiments/{experiment_id}"): None,
    ("POST", "/api/prompt-experiments/{experiment_id}/evaluate"): {},
    ("POST", "/api/prompt-experiments/{experiment_id}/stop"): {},
    ("POST", "/api/outcomes"): {},
    ("GET", "/api/guardrails/policies"): None,
    ("POST", "/api/guardrails/policies"): {},
    ("GET", "/api/guardrails/policies/{name}"): None,
    ("GET", "/api/guardrails/policies/{name}/diff"): None,
    ("GET", "/api/guardrails/policies/{name}/history"): None,
    ("GET", "/api/guardrails/policies/{name}/versions/{version}"): None,
    ("PUT", "/api/guardrails/policies/{name}/labels/{label}"): {},
    ("POST", "/api/guardrails/policies/{name}/labels/{label}/rollback"): {},
    ("POST", "/api/knowledge/search"): {},
    ("GET", "/api/knowledge/sources"): None,
    ("GET", "/api/knowledge/snapshots"): None,
    ("GET", "/api/knowledge/snapshots/{snapshot_id}"): None,
    ("GET", "/api/knowledge/diff"): None,
    ("POST", "/api/knowledge/rollback"): {},
    ("GET", "/api/eval/datasets"): None,
    ("GET", "/api/eval/datasets/{name}"): None,
    ("GET", "/api/eval/datasets/{name}/drafts"): None,
    ("POST", "/api/eval/datasets/{name}"): {},
    ("POST", "/api/eval/datasets/{name}/review"): {},
    ("GET", "/api/eval/experiments"): None,
    ("GET", "/api/eval/experiments/{experiment_id}"): None,
    ("GET", "/api/eval/compare"): None,
    ("GET", "/api/feedback"): None,
    ("POST", "/api/feedback"): {},
    ("GET", "/api/reviews"): None,
    ("POST", "/api/reviews/{item_id}/resolve"): {"resolution": ""},
    ("GET", "/api/runbooks"): None,
    ("POST", "/api/runbooks/{name}/run"): {},
    ("GET", "/api/triggers"): None,
    ("POST", "/api/triggers"): {},
    ("DELETE", "/api/triggers/{name}"): None,
    ("POST", "/api/triggers/evaluate"): {},
    ("GET", "/api/triggers/firings"): None,
    ("GET", "/api/triggers/firings/{firing_id}"): None,
    ("POST", "/api/triggers/firings/{firing_id}/approve"): {},
    ("POST", "/api/triggers/firings/{firing_id}/reject"): {},
    ("GET", "/api/drift"): None,
    ("GET", "/api/drift/{app}/retrieval"): None,
    ("POST", "/api/drift/{app}/check"): {},
    ("GET", "/api/metrics/catalog"): None,
    ("GET", "/api/metrics/series"): None,
    ("GET", "/api/metrics/value"): None,
    ("GET", "/api/audit"): None,
    ("GET", "/api/audit/export"): None,
    ("GET", "/api/audit/verify"): None,
    ("GET", "/api/maturity"): None,
    ("GET", "/api/evidence-pack"): None,
    ("GET", "/api/costs"): None,
    ("GET", "/api/costs/budgets"): None,
    ("GET", "/api/costs/chargeback.csv"): None,
    ("DELETE", "/api/users/{user_id}/data"): None,
    ("GET", "/api/whoami"): None,
    ("GET", "/api/projects"): None,
    ("POST", "/api/projects"): {},
    ("GET", "/api/principals"): None,
    ("POST", "/api/principals"): {},
    ("POST", "/api/principals/{name}/disable"): {},
    ("GET", "/api/roles"): None,
    ("POST", "/api/roles"): {},
    ("DELETE", "/api/roles"): {},
    ("GET", "/api/keys"): None,
    ("POST", "/api/keys"): {},
    ("DELETE", "/api/keys/{key_id}"): None,
}
# Path parameters that do not name an object of a project.
PARAMS = {"version": "1", "label": "production", "snapshot_id": "1", "user_id": "nobody"}
PARAMS_BY_ROUTE = {
    "/api/runbooks/{name}/run": {"name": "no-such-runbook"},
    "/api/principals/{name}/disable": {"name": "victim"},
}


@dataclass(frozen=True)
class Caller:
    name: str
    key: str
    permissions: frozenset[str]  # in the project "own"
    everywhere: frozenset[str]  # on every project


def _settings(tmp_path: Path, database_url: str) -> Settings:
    apps = [RagConfig(name="own-rag", project="own", min_similarity=-1.0),
            RagConfig(name="other-rag", project="other", min_similarity=-1.0)]  # fmt: skip
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, rag_apps=apps, auth=AuthSettings(required=True)
    )


def _objects(platform: Platform, project: str, app: str) -> dict[str, str]:
    """One object of each kind in ``project``, made as the API would (the owner recorded)."""
    claim = platform.access.ownership.claim
    prompt, policy, dataset, trigger = (f"{project}-{kind}" for kind in ("prompt", "policy", "dataset", "trigger"))
    messages = [{"role": "user", "content": "Hello {{ name }}"}]
    platform.prompts.create(prompt, messages, author="setup")
    platform.prompts.create(prompt, [{"role": "user", "content": "Hi {{ name }}"}], author="setup")
    claim("prompt", prompt, project)
    platform.prompts.move_label(prompt, "production", 1, by="setup")
    platform.prompts.approvals.set_policy(prompt, "dev", "stable", required_approvals=1, by="setup")
    change = platform.prompts.approvals.request(prompt, "stable", 2, by="setup")
    experiment = platform.prompts.experiments.start(prompt, "production", {1: 0.5, 2: 0.5}, by="setup")
    policy_spec = default_policy().model_copy(update={"name": policy})
    platform.guardrail_policies.create(policy_spec, author="setup")
    claim("policy", policy, project)
    platform.datasets.save(dataset, [Example(id="e1", input="How many PTO days?")], author="setup")
    claim("dataset", dataset, project)
    claim("trigger", trigger, project)
    platform.triggers.add_rule(
        {"name": trigger, "when": {"metric": "requests", "app": app, "window_s": 60, "op": ">", "threshold": 1e9},
         "actions": [{"open_review": {"title": "x"}}]}, by="setup")  # fmt: skip
    answer = asyncio.run(platform.rag(app).ask("How many PTO days do I get?", user="someone"))
    review = platform.reviews.open("look at this", {"request_id": answer.request_id, "app": app})
    now = datetime.now(UTC)
    with platform.store.session() as session:
        session.add(EvalExperimentRow(id=f"exp-{project}", name="e", dataset=dataset, dataset_version=1, config={},
                                      config_hash="0" * 64, metrics={}, status="finished", author="setup",
                                      created_at=now))  # fmt: skip
        session.add(TriggerFiringRow(id=f"fir-{project}", rule=trigger, source="rule", created_at=now, inputs={},
                                     status="pending_approval", actor="setup"))  # fmt: skip
    platform.access.principals.add(f"holder-{project}", by="setup")
    record, _key = platform.access.keys.create(f"holder-{project}", project, by="setup")
    platform.journal.flush()
    return {
        "prompt": prompt,
        "policy": policy,
        "dataset": dataset,
        "trigger": trigger,
        "prompt_request": str(change.id),
        "prompt_experiment": experiment.id,
        "experiment": f"exp-{project}",
        "firing": f"fir-{project}",
        "review": review,
        "request": answer.request_id,
        "app": app,
        "key": record["id"],
    }


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[tuple[str, dict[str, dict[str, str]], list[Caller]]]:
    settings = _settings(tmp_path, database_url)
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("15 days [1].")})
    try:
        corpus = tmp_path / "corpus"
        shutil.copytree(SAMPLES, corpus)
        platform.knowledge.ingest(corpus)
        objects = {"own": _objects(platform, "own", "own-rag"), "other": _objects(platform, "other", "other-rag")}
        platform.access.principals.add("victim", by="setup")
        callers = []
        grants: list[tuple[str, str | None, str]] = [(role, role, "own") for role in sorted(PERMISSIONS)]
        grants += [("nobody", None, "own"), ("platform-admin", "admin", ALL_PROJECTS),
                   ("platform-viewer", "viewer", ALL_PROJECTS)]  # fmt: skip
        for name, role, where in grants:
            platform.access.principals.add(f"u-{name}", by="setup")
            if role is not None:
                platform.roles.grant(f"u-{name}", role, by="setup", project=where)
            _record, key = platform.access.keys.create(f"u-{name}", "own", by="setup")
            granted = PERMISSIONS[role] if role else frozenset()
            callers.append(Caller(name, key, granted, granted if where == ALL_PROJECTS else frozenset()))
        with serve_in_thread(create_app(platform)) as base:
            yield base, objects, callers
    finally:
        platform.close()


def test_every_route_has_a_case_and_a_rule(sqlite_platform: Platform) -> None:
    routes = route_keys(_fastapi(sqlite_platform).routes)
    missing = [f"{m} {p}" for m, p in routes if (m, p) not in CASES]
    assert not missing, f"add an authorisation case to tests/unit/test_authz_routes.py for: {missing}"
    assert not [r for r in routes if r not in ROUTE_RULES]
    stale = [f"{m} {p}" for m, p in CASES if (m, p) not in routes]
    assert not stale, f"cases for routes that no longer exist: {stale}"


def _path(template: str, rule: Rule, target: dict[str, str]) -> str:
    values = {**PARAMS, **PARAMS_BY_ROUTE.get(template, {})}
    if rule.kind and rule.param:
        values[rule.param] = target[rule.kind]
    path = template
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a parameter of {template}"
    return path


def _expected(rule: Rule, caller: Caller, other: bool) -> int | None:
    """The guard's refusal (401/403/404), or None when it lets the request through to its handler."""
    if rule.scope == "public":
        return None
    if rule.scope == "platform":
        return None if rule.permission in caller.everywhere else 403
    if rule.permission not in caller.permissions:
        return 403
    return 404 if other and rule.kind else None


def test_each_role_on_each_route_for_its_own_and_another_projects_objects(world: Any) -> None:
    base, objects, callers = world
    failures = []
    seen: dict[str, int] = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for (method, template), body in CASES.items():
            rule = ROUTE_RULES[(method, template)]
            targets = [("own", False), ("other", True)] if rule.kind else [("own", False)]
            for project, other in targets:
                path = _path(template, rule, objects[project])
                for caller in callers:
                    response = client.request(
                        method, path, json=body, headers={"authorization": f"Bearer {caller.key}"}
                    )
                    denied = response.headers.get("x-llmops-denied")
                    expected = _expected(rule, caller, other)
                    outcome = response.status_code if denied else None
                    kind = f"{outcome or 'through'}:{response.status_code // 100}xx"
                    seen[kind] = seen.get(kind, 0) + 1
                    if outcome != expected:
                        failures.append(f"{caller.name} {method} {path}: {response.status_code} {denied} "
                                         f"(expected {expected or 'through'}) {response.text[:120]}")  # fmt: skip
            # Without a key, or with a made-up one, nothing but public routes answers.
            path = _path(template, rule, objects["own"])
            for headers in ({}, {"authorization": "Bearer llmops_0000_made-up"}):
                response = client.request(method, path, json=body, headers=headers)
                if rule.scope != "public" and response.status_code != 401:
                    failures.append(f"{headers or 'no key'} {method} {path}: {response.status_code}")
    assert not failures, "\n".join(failures)
    # The requests let through really ran their handlers (most succeeded), and none broke the server.
    assert seen["through:2xx"] > 250 and seen["403:4xx"] > 500 and seen["404:4xx"] > 150, seen
    assert "through:5xx" not in seen, seen
