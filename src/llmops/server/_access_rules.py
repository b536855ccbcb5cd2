"""What each route requires: a permission, where it must hold, and which object (by path parameter) it touches.

Every route of the app must have a rule here: `AccessGuard` refuses to start otherwise, and the authorisation test
(tests/unit/test_authz_routes.py) is generated from the app's route list, so a new route needs both a rule and a
test case before CI passes.

Scopes: ``public`` (no identity needed: health, the static pages, the API schema), ``project`` (the permission in
the project the caller acts in, and any object named in the path must belong to that project) and ``platform``
(the permission on every project: a role granted on ``*``, for what spans projects such as the audit log).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops._settings import Settings
from llmops.evaluation._tables import DatasetRow, EvalExperimentRow
from llmops.gateway._tables import GatewayCallRow
from llmops.governance._access import Ownership
from llmops.governance._tables import ApiKeyRow, PrincipalRow
from llmops.guardrails._tables import PolicyRow
from llmops.loop._tables import ReviewItemRow, TriggerFiringRow, TriggerRuleRow
from llmops.observability._tables import RequestMetricRow
from llmops.prompts._tables import ChangeRequestRow, ExperimentRow, PromptRow
from llmops.store import Store

__all__ = ["ROUTE_RULES", "ObjectResolver", "Rule"]

Scope = Literal["public", "project", "platform"]


@dataclass(frozen=True)
class Rule:
    """``permission`` in ``scope``; ``kind``/``param``: the object named by that path parameter must be the caller's
    project's; ``creates``: the route may create it (an object that does not exist yet becomes the project's)."""

    scope: Scope
    permission: str | None = None
    kind: str | None = None
    param: str | None = None
    creates: bool = False


PUBLIC = Rule("public")
_OWNERS_KEPT = 100_000


def _project(permission: str, kind: str | None = None, param: str | None = None, *, creates: bool = False) -> Rule:
    return Rule("project", permission, kind, param, creates)


def _platform(permission: str) -> Rule:
    return Rule("platform", permission)


ROUTE_RULES: Mapping[tuple[str, str], Rule] = {
    # pages, health, schema
    ("GET", "/"): PUBLIC,
    ("GET", "/prompts"): PUBLIC,
    ("GET", "/observe"): PUBLIC,
    # Sign-in (the flow proves who the caller is) and sign-out (ends the session its cookie names, nothing else).
    ("GET", "/auth/login"): PUBLIC,
    ("GET", "/auth/callback"): PUBLIC,
    ("POST", "/auth/logout"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/metrics"): _platform("read"),
    # models: OpenAI- and Anthropic-compatible
    ("POST", "/v1/chat/completions"): _project("invoke"),
    ("POST", "/v1/completions"): _project("invoke"),
    ("POST", "/v1/embeddings"): _project("invoke"),
    ("POST", "/v1/messages"): _project("invoke"),
    ("GET", "/v1/models"): _project("invoke"),
    # answers and traces
    ("POST", "/api/ask"): _project("invoke"),
    ("GET", "/api/answers/{request_id}"): _project("invoke", "request", "request_id"),
    ("GET", "/api/traces"): _project("read"),
    ("GET", "/api/traces/{request_id}"): _project("read", "request", "request_id"),
    ("GET", "/api/explain/{request_id}"): _project("read", "request", "request_id"),
    ("POST", "/api/replay/{request_id}"): _project("write", "request", "request_id"),
    # prompts
    ("GET", "/api/prompts"): _project("read"),
    ("GET", "/api/prompts/{name}"): _project("read", "prompt", "name"),
    ("GET", "/api/prompts/{name}/diff"): _project("read", "prompt", "name"),
    ("GET", "/api/prompts/{name}/history"): _project("read", "prompt", "name"),
    ("GET", "/api/prompts/{name}/resolve"): _project("read", "prompt", "name"),
    ("GET", "/api/prompts/{name}/versions/{version}"): _project("read", "prompt", "name"),
    ("POST", "/api/prompts/{name}/versions"): _project("write", "prompt", "name", creates=True),
    ("POST", "/api/prompts/{name}/versions/{version}/archive"): _project("write", "prompt", "name"),
    ("POST", "/api/prompts/{name}/versions/{version}/render"): _project("read", "prompt", "name"),
    ("POST", "/api/prompts/{name}/versions/{version}/stage"): _project("write", "prompt", "name"),
    ("PUT", "/api/prompts/{name}/labels/{label}"): _project("write", "prompt", "name"),
    ("POST", "/api/prompts/{name}/labels/{label}/rollback"): _project("write", "prompt", "name"),
    ("POST", "/api/prompts/{name}/checks"): _project("write", "prompt", "name"),
    ("GET", "/api/prompt-policies"): _project("read"),
    ("POST", "/api/prompt-policies"): _platform("admin"),
    ("GET", "/api/prompt-requests"): _project("read"),
    ("POST", "/api/prompt-requests"): _project("write"),
    ("POST", "/api/prompt-requests/{request_id}/apply"): _project("write", "prompt_request", "request_id"),
    ("POST", "/api/prompt-requests/{request_id}/approve"): _project("approve", "prompt_request", "request_id"),
    ("POST", "/api/prompt-requests/{request_id}/reject"): _project("approve", "prompt_request", "request_id"),
    ("GET", "/api/prompt-experiments"): _project("read"),
    ("POST", "/api/prompt-experiments"): _project("write"),
    ("GET", "/api/prompt-experiments/{experiment_id}"): _project("read", "prompt_experiment", "experiment_id"),
    ("POST", "/api/prompt-experiments/{experiment_id}/evaluate"): _project(
        "write", "prompt_experiment", "experiment_id"
    ),
    ("POST", "/api/prompt-experiments/{experiment_id}/stop"): _project("write", "prompt_experiment", "experiment_id"),
    ("POST", "/api/outcomes"): _project("invoke"),
    # guardrail policies
    ("GET", "/api/guardrails/policies"): _project("read"),
    ("POST", "/api/guardrails/policies"): _project("write"),
    ("GET", "/api/guardrails/policies/{name}"): _project("read", "policy", "name"),
    ("GET", "/api/guardrails/policies/{name}/diff"): _project("read", "policy", "name"),
    ("GET", "/api/guardrails/policies/{name}/history"): _project("read", "policy", "name"),
    ("GET", "/api/guardrails/policies/{name}/versions/{version}"): _project("read", "policy", "name"),
    ("PUT", "/api/guardrails/policies/{name}/labels/{label}"): _project("write", "policy", "name"),
    ("POST", "/api/guardrails/policies/{name}/labels/{label}/rollback"): _project("write", "policy", "name"),
    # knowledge: search is scoped to the project's documents; the index itself is shared infrastructure
    ("POST", "/api/knowledge/search"): _project("read"),
    ("GET", "/api/knowledge/sources"): _platform("read"),
    ("GET", "/api/knowledge/snapshots"): _platform("read"),
    ("GET", "/api/knowledge/snapshots/{snapshot_id}"): _platform("read"),
    ("GET", "/api/knowledge/diff"): _platform("read"),
    ("POST", "/api/knowledge/rollback"): _platform("admin"),
    # evaluation
    ("GET", "/api/eval/datasets"): _project("read"),
    ("GET", "/api/eval/datasets/{name}"): _project("read", "dataset", "name"),
    ("GET", "/api/eval/datasets/{name}/drafts"): _project("read", "dataset", "name"),
    ("POST", "/api/eval/datasets/{name}"): _project("write", "dataset", "name", creates=True),
    ("POST", "/api/eval/datasets/{name}/review"): _project("write", "dataset", "name"),
    ("GET", "/api/eval/experiments"): _project("read"),
    ("GET", "/api/eval/experiments/{experiment_id}"): _project("read", "experiment", "experiment_id"),
    ("GET", "/api/eval/compare"): _project("read"),
    # the closed loop
    ("GET", "/api/feedback"): _project("read"),
    ("POST", "/api/feedback"): _project("invoke"),
    ("GET", "/api/reviews"): _project("read"),
    ("POST", "/api/reviews/{item_id}/resolve"): _project("approve", "review", "item_id"),
    ("GET", "/api/runbooks"): _platform("read"),
    ("POST", "/api/runbooks/{name}/run"): _platform("admin"),
    ("GET", "/api/triggers"): _project("read"),
    ("POST", "/api/triggers"): _project("write"),
    ("DELETE", "/api/triggers/{name}"): _project("write", "trigger", "name"),
    ("POST", "/api/triggers/evaluate"): _platform("admin"),
    ("GET", "/api/triggers/firings"): _project("read"),
    ("GET", "/api/triggers/firings/{firing_id}"): _project("read", "firing", "firing_id"),
    ("POST", "/api/triggers/firings/{firing_id}/approve"): _project("approve", "firing", "firing_id"),
    ("POST", "/api/triggers/firings/{firing_id}/reject"): _project("approve", "firing", "firing_id"),
    ("GET", "/api/drift"): _project("read"),
    ("GET", "/api/drift/{app}/retrieval"): _project("read", "app", "app"),
    ("POST", "/api/drift/{app}/check"): _project("write", "app", "app"),
    ("GET", "/api/metrics/catalog"): _project("read"),
    ("GET", "/api/metrics/series"): _project("read"),
    ("GET", "/api/metrics/value"): _project("read"),
    # governance
    ("GET", "/api/audit"): _platform("admin"),
    ("GET", "/api/audit/export"): _platform("admin"),
    ("GET", "/api/audit/verify"): _platform("admin"),
    ("GET", "/api/maturity"): _platform("read"),
    ("GET", "/api/evidence-pack"): _platform("admin"),
    ("GET", "/api/costs"): _platform("read"),
    ("GET", "/api/costs/budgets"): _platform("read"),
    ("GET", "/api/costs/chargeback.csv"): _platform("read"),
    ("DELETE", "/api/users/{user_id}/data"): _platform("admin"),
    # access control
    ("GET", "/api/whoami"): _project("read"),
    ("GET", "/api/projects"): _platform("read"),
    ("POST", "/api/projects"): _platform("admin"),
    ("GET", "/api/principals"): _platform("admin"),
    ("POST", "/api/principals"): _platform("admin"),
    ("POST", "/api/principals/{name}/disable"): _platform("admin"),
    ("GET", "/api/roles"): _project("admin"),
    ("POST", "/api/roles"): _project("admin"),
    ("DELETE", "/api/roles"): _project("admin"),
    ("GET", "/api/keys"): _project("admin"),
    ("POST", "/api/keys"): _project("admin"),
    ("DELETE", "/api/keys/{key_id}"): _project("admin", "key", "key_id"),
}


class ObjectResolver:
    """The project an object belongs to, or None when there is no such object.

    Named objects (prompts, policies, datasets, trigger rules) are looked up in the ownership records; objects that
    hang off another (a change request off its prompt, an experiment off its dataset, a firing off its rule) take
    their parent's project; a request belongs to its app's project (or its key's, for a model call); an app to the
    project in its settings."""

    def __init__(self, store: Store, ownership: Ownership, settings: Settings) -> None:
        self._store = store
        self._ownership = ownership
        self._apps = {app.name: app.project for app in settings.rag_apps}
        self._default = ownership.default_project
        self._owners: dict[tuple[str, str], str] = {}
        self._lookups: dict[str, Callable[[Session, str], str | None]] = {
            "prompt": self._named(PromptRow, "prompt"),
            "policy": self._named(PolicyRow, "policy"),
            "dataset": self._named(DatasetRow, "dataset"),
            "trigger": self._named(TriggerRuleRow, "trigger"),
            "prompt_request": self._child(ChangeRequestRow.prompt_name, ChangeRequestRow.id, "prompt", numeric=True),
            "prompt_experiment": self._child(ExperimentRow.prompt_name, ExperimentRow.id, "prompt"),
            "experiment": self._child(EvalExperimentRow.dataset, EvalExperimentRow.id, "dataset"),
            "firing": self._firing,
            "review": self._review,
            "request": self._request,
            "app": lambda _session, name: self.app_project(name),
            "key": lambda session, key_id: session.scalar(select(ApiKeyRow.project).where(ApiKeyRow.id == key_id)),
            "principal": lambda session, name: self._default if session.get(PrincipalRow, name) else None,
        }

    @property
    def ownership(self) -> Ownership:
        return self._ownership

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._lookups)

    def app_project(self, app: str | None) -> str:
        """The project of an app (the default project for apps not in settings, e.g. a gateway caller's tag)."""
        return self._apps.get(app or "", self._default)

    def apps_of_all(self) -> list[str]:
        return list(self._apps)

    def apps_of(self, project: str) -> list[str]:
        return [app for app, owner in self._apps.items() if owner == project]

    def owner(self, kind: str, key: str) -> str | None:
        """The owning project of ``kind`` ``key``; None when it does not exist. An object's project never changes,
        so found owners are remembered (`cached_owner`)."""
        found = self._owners.get((kind, key))
        if found is not None:
            return found
        with self._store.session() as session:
            found = self._lookups[kind](session, key)
        if found is not None:
            if len(self._owners) >= _OWNERS_KEPT:
                self._owners.clear()
            self._owners[(kind, key)] = found
        return found

    def cached_owner(self, kind: str, key: str) -> str | None:
        """The owner if it was looked up before (no I/O: for the event loop), else None."""
        return self._owners.get((kind, key))

    def _named(self, table: type, kind: str) -> Callable[[Session, str], str | None]:
        def lookup(session: Session, key: str) -> str | None:
            if session.get(table, key) is None:
                return None
            return self._ownership.owner(kind, key)

        return lookup

    def _child(
        self, parent: Any, ident: Any, kind: str, *, numeric: bool = False
    ) -> Callable[[Session, str], str | None]:
        def lookup(session: Session, key: str) -> str | None:
            if numeric and not key.isdigit():
                return None
            value: int | str = int(key) if numeric else key
            name = session.scalar(select(parent).where(ident == value))
            return None if name is None else self._ownership.owner(kind, str(name))

        return lookup

    def _firing(self, session: Session, firing_id: str) -> str | None:
        rule = session.scalar(select(TriggerFiringRow.rule).where(TriggerFiringRow.id == firing_id))
        if rule is None:
            return None
        if rule.startswith(("runbook:", "manual:")):
            return self._default  # runbooks are run by platform operators
        return self._ownership.owner("trigger", rule)

    def _review(self, session: Session, item_id: str) -> str | None:
        row = session.get(ReviewItemRow, item_id)
        if row is None:
            return None
        details = row.details or {}
        if isinstance(details.get("app"), str):  # a held answer names its app before its request is stored
            return self.app_project(details["app"])
        if isinstance(details.get("request_id"), str):
            return self._request(session, details["request_id"]) or self._default
        if row.firing_id:
            return self._firing(session, row.firing_id) or self._default
        return self._default

    def _request(self, session: Session, request_id: str) -> str | None:
        """A RAG app's request is its app's project's; a model call made with a stored key is the key's project's
        (the ledger names the key); any other call is the default project's."""
        row = session.get(RequestMetricRow, request_id)
        if row is None:
            return None
        if row.app in self._apps:
            return self._apps[row.app]
        keyed = session.scalar(
            select(ApiKeyRow.project)
            .join(GatewayCallRow, GatewayCallRow.key_name == ApiKeyRow.id)
            .where(GatewayCallRow.request_id == request_id)
            .limit(1)
        )
        return keyed or self._default
