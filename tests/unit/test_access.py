"""Access control: projects, principals, roles per project, API keys (hashed, shown once, scoped, expiring,
revocable), and every change in the audit log."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from llmops import Platform, Settings
from llmops._settings import RagConfig
from llmops.governance import ALL_PROJECTS, AccessControl, InvalidKeyError
from llmops.governance._access import document_scope
from llmops.governance._tables import ApiKeyRow
from llmops.knowledge import MetadataFilter
from llmops.testing import HashEmbedder, ScriptedProvider

from ..conftest import SAMPLES

LOCAL_MODEL = "smollm2-135m-instruct"


@pytest.fixture
def access(platform: Platform) -> AccessControl:
    platform.access.projects.create("support", by="ana")
    platform.access.principals.add("bot", kind="service", by="ana")
    platform.access.principals.add("olga", by="ana")
    return platform.access


def test_a_key_is_shown_once_and_stored_as_a_hash(platform: Platform, access: AccessControl) -> None:
    record, secret = access.keys.create("bot", "support", by="ana", scopes=["invoke"], team="care", app="helpdesk")
    assert secret.startswith("llmops_" + record["id"] + "_") and len(secret) > 50
    assert "key" not in record and secret not in json.dumps(record)
    with platform.store.session() as session:
        row = session.get(ApiKeyRow, record["id"])
        assert row is not None and row.secret_hash != secret and len(row.secret_hash) == 64
    # Nothing in any column of any table holds the key.
    with platform.store.engine.connect() as connection:
        for table in sa.inspect(platform.store.engine).get_table_names():
            for row in connection.execute(sa.text(f'SELECT * FROM "{table}"')):
                assert secret not in str(tuple(row)), table
    assert access.keys.list(project="support")[0]["state"] == "active"
    key = access.keys.authenticate(secret)
    assert (key.principal, key.project, key.scopes, key.team, key.app) == (
        "bot", "support", frozenset({"invoke"}), "care", "helpdesk")  # fmt: skip


def test_roles_per_project_and_scopes_decide_permissions(access: AccessControl) -> None:
    access.roles.grant("bot", "app", by="ana", project="support")
    access.roles.grant("olga", "editor", by="ana", project="support")
    access.roles.grant("olga", "viewer", by="ana", project=ALL_PROJECTS)
    _, bot_key = access.keys.create("bot", "support", by="ana")
    _, olga_key = access.keys.create("olga", "support", by="ana")
    _, olga_elsewhere = access.keys.create("olga", "default", by="ana")
    _, olga_read_only = access.keys.create("olga", "support", by="ana", scopes=["read"])
    assert access.identify(bot_key).permissions == {"invoke"}
    assert access.identify(olga_key).permissions == {"read", "invoke", "write"}
    assert access.identify(olga_key).platform == {"read"}
    assert access.identify(olga_elsewhere).permissions == {"read"}  # only the viewer role held everywhere
    assert access.identify(olga_read_only).permissions == {"read"}
    assert access.roles.revoke("olga", "editor", by="ana", project="support")
    assert access.identify(olga_key).permissions == {"read"}  # a role change is seen at once on this replica
    assert not access.roles.revoke("olga", "editor", by="ana", project="support")


def test_expired_revoked_unknown_and_disabled_keys_are_refused(access: AccessControl) -> None:
    record, secret = access.keys.create("bot", "support", by="ana", expires_in=timedelta(days=1))
    assert access.keys.authenticate(secret).id == record["id"]
    with access.keys._store.session() as session:  # a day passes
        row = session.get(ApiKeyRow, record["id"])
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    access.keys._verified.clear()
    with pytest.raises(InvalidKeyError, match=f"API key {record['id']} expired"):
        access.keys.authenticate(secret)
    assert access.keys.list()[0]["state"] == "expired"

    record, secret = access.keys.create("bot", "support", by="ana")
    access.keys.authenticate(secret)  # cached now: a revocation must still take effect at once
    access.keys.revoke(record["id"], by="ana")
    with pytest.raises(InvalidKeyError, match="was revoked"):
        access.keys.authenticate(secret)
    with pytest.raises(InvalidKeyError, match="unknown API key"):
        access.keys.authenticate(secret + "x")

    _record, secret = access.keys.create("olga", "support", by="ana")
    disabled = access.principals.disable("olga", by="ana")
    assert len(disabled["keys_revoked"]) == 1
    with pytest.raises(InvalidKeyError):
        access.keys.authenticate(secret)
    with pytest.raises(ValueError, match="disabled"):
        access.keys.create("olga", "support", by="ana")


def test_bad_requests_say_what_is_wrong(access: AccessControl) -> None:
    with pytest.raises(LookupError, match="no user or service account 'ghost'"):
        access.keys.create("ghost", "support", by="ana")
    with pytest.raises(LookupError, match="no project 'nope'"):
        access.keys.create("bot", "nope", by="ana")
    with pytest.raises(ValueError, match="unknown scope"):
        access.keys.create("bot", "support", by="ana", scopes=["root"])
    with pytest.raises(ValueError, match="expire in the future"):
        access.keys.create("bot", "support", by="ana", expires_in=timedelta(0))
    with pytest.raises(ValueError, match="invalid project name"):
        access.projects.create("Bad Name", by="ana")
    with pytest.raises(ValueError, match="exists"):
        access.projects.create("support", by="ana")
    with pytest.raises(ValueError, match="unknown role"):
        access.roles.grant("bot", "boss", by="ana")
    with pytest.raises(ValueError, match="kind must be"):
        access.principals.add("x", kind="robot", by="ana")


def test_every_change_is_audited(platform: Platform, access: AccessControl) -> None:
    access.roles.grant("bot", "app", by="ana", project="support")
    record, secret = access.keys.create("bot", "support", by="ana", scopes=["invoke"])
    access.keys.revoke(record["id"], by="ana")
    access.roles.revoke("bot", "app", by="ana", project="support")
    actions = [(e["action"], e["actor"], e["object_id"]) for e in platform.audit.entries()]
    assert ("project.create", "ana", "support") in actions
    assert ("service.add", "ana", "bot") in actions and ("user.add", "ana", "olga") in actions
    assert ("role.grant", "ana", "bot") in actions and ("role.revoke", "ana", "bot") in actions
    assert ("key.create", "ana", record["id"]) in actions and ("key.revoke", "ana", record["id"]) in actions
    assert secret not in json.dumps(platform.audit.entries())
    assert platform.audit.verify().ok


def test_the_document_scope_keeps_retrieval_inside_a_project() -> None:
    projects = ["default", "support", "legal"]
    support = document_scope("support", default_project="default", projects=projects)
    default = document_scope("default", default_project="default", projects=projects)
    assert support.matches({"project": "support"}) and not support.matches({"project": "legal"})
    assert not support.matches({})  # the default project's chunks carry no project
    assert default.matches({}) and not default.matches({"project": "support"})
    crafted = MetadataFilter.parse({"project": "legal"}).and_(support)
    assert not crafted.matches({"project": "legal"}) and not crafted.matches({"project": "support"})


def test_the_cli_manages_projects_users_roles_and_keys(monkeypatch: pytest.MonkeyPatch, platform: Platform) -> None:
    from llmops.cli._main import app

    monkeypatch.setenv("LLMOPS_DATA_DIR", str(platform.settings.data_dir))
    if platform.settings.database_url:
        monkeypatch.setenv("LLMOPS_DATABASE_URL", platform.settings.database_url)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--user", "ana"])
        assert result.exit_code == code, result.output
        return result.output

    run("projects", "create", "support")
    assert "support" in runner.invoke(app, ["projects", "list"]).output
    run("users", "add", "bot", "--service")
    run("roles", "grant", "bot", "app", "--project", "support")
    created = json.loads(run("keys", "create", "bot", "--project", "support", "--scope", "invoke", "--json"))
    assert created["key"].startswith("llmops_") and created["scopes"] == ["invoke"]
    listed = runner.invoke(app, ["keys", "list", "--project", "support"]).output
    assert created["id"] in listed and created["key"] not in listed
    run("keys", "revoke", created["id"])
    assert "revoked" in runner.invoke(app, ["keys", "list"]).output
    assert "no project 'nope'" in run("keys", "create", "bot", "--project", "nope", code=1)


def test_a_stored_key_on_v1_tags_the_ledger_with_its_team_app_and_cost_centre(
    platform: Platform, access: AccessControl
) -> None:
    from llmops.governance._costs import cost_report
    from llmops.server import create_app

    from ..helpers import serve_in_thread

    access.roles.grant("bot", "app", by="ana", project="support")
    record, secret = access.keys.create("bot", "support", by="ana", team="care", app="helpdesk", cost_centre="CC-7")
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]}
    access.principals.add("olga-admin", by="ana")
    access.roles.grant("olga-admin", "admin", by="ana", project="default")
    _, default_admin = access.keys.create("olga-admin", "default", by="ana")
    access.roles.grant("bot", "viewer", by="ana", project="support")
    with serve_in_thread(create_app(platform)) as base:
        answered = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"})
        refused = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"authorization": "Bearer llmops_x_y"})
        # The call is the key's project's: its trace is found from there, not from the default project.
        request_id = "req_" + answered.json()["id"].removeprefix("chatcmpl-")
        mine = httpx.get(f"{base}/api/traces/{request_id}", headers={"authorization": f"Bearer {secret}"})
        theirs = httpx.get(f"{base}/api/traces/{request_id}", headers={"authorization": f"Bearer {default_admin}"})
    assert answered.status_code == 200, answered.text
    assert mine.status_code == 200 and theirs.status_code == 404, (mine.text, theirs.text)
    assert refused.status_code == 401 and refused.headers["x-llmops-denied"] == "authentication"
    report = cost_report(
        platform.store, by=["cost_centre", "team", "app", "user"], centres=access.keys.centres(),
        flush=platform.journal.flush,
    )  # fmt: skip
    assert [(r.group, r.calls) for r in report.rows] == [
        ({"cost_centre": "CC-7", "team": "care", "app": "helpdesk", "user": "bot"}, 1)
    ]
    assert record["id"] in access.keys.centres()


def test_an_apps_retrieval_stays_in_its_project_whatever_its_filter(tmp_path: Path, database_url: str) -> None:
    apps = [
        RagConfig(name="handbook-rag", min_similarity=-1.0, top_k=10),
        RagConfig(name="legal-rag", project="legal", min_similarity=-1.0, top_k=10),
        RagConfig(name="sneaky-rag", min_similarity=-1.0, top_k=10, filter={"project": "legal"}),
    ]
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, rag_apps=apps)
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("ok [1]")})
    try:
        legal = tmp_path / "legal"
        legal.mkdir()
        (legal / "heron.md").write_text("---\nproject: default\n---\n# Heron\n\nThe merger codename is BLUEHERON.\n")
        platform.knowledge.ingest(SAMPLES)
        platform.knowledge.ingest(legal, metadata={"project": "legal"})
        with pytest.raises(ValueError, match="registered with metadata"):
            platform.knowledge.ingest(legal, metadata={"project": "other"})

        def sources(app: str) -> set[str]:
            answer = asyncio.run(platform.rag(app).ask("What is the merger codename? How many PTO days?"))
            return {Path(c.source).parent.name for c in answer.citations} | {"-"}

        assert sources("legal-rag") <= {"legal", "-"} and "legal" in sources("legal-rag")
        assert "legal" not in sources("handbook-rag")  # the document's own front matter cannot claim a project
        assert sources("sneaky-rag") == {"-"}  # its filter asks for legal's documents: it finds nothing
    finally:
        platform.close()


def test_changes_and_sensitive_reads_are_audited(ingested: Platform) -> None:
    from llmops.guardrails import default_policy
    from llmops.server import create_app

    from ..helpers import serve_in_thread

    platform = ingested
    platform.prompts.create("greet", [{"role": "user", "content": "Hi {{ name }}"}], author="ana")
    platform.prompts.create("greet", [{"role": "user", "content": "Hello {{ name }}"}], author="ana")
    platform.prompts.approvals.set_policy("greet", "dev", "stable", required_approvals=1, by="root")
    platform.roles.grant("olga", "approver", by="root")
    change = platform.prompts.approvals.request("greet", "stable", 2, by="ana")
    platform.prompts.approvals.approve(change.id, by="olga")
    platform.guardrail_policies.create(default_policy().model_copy(update={"name": "strict"}), author="ana")
    first = platform.knowledge.served_snapshot()
    corpus = Path(platform.knowledge.sources.list()[0].location)
    changed = next(corpus.rglob("*.md"))
    changed.write_text(changed.read_text() + "\n\nAmended.\n")
    platform.knowledge.ingest(actor="ana")
    platform.knowledge.rollback(first or 1, actor="ops")
    answer = asyncio.run(platform.rag().ask("How many PTO days?"))
    platform.access.principals.add("auditor", by="root")
    platform.roles.grant("auditor", "admin", by="root")
    _, key = platform.access.keys.create("auditor", "default", by="root")
    headers = {"authorization": f"Bearer {key}"}
    with serve_in_thread(create_app(platform)) as base:
        for path in (f"/api/explain/{answer.request_id}", "/api/audit/export", "/api/evidence-pack",
                     "/api/costs/chargeback.csv"):  # fmt: skip
            assert httpx.get(base + path, headers=headers, timeout=60).status_code == 200, path
    entries = platform.audit.entries()
    done = {(e["action"], e["actor"]) for e in entries}
    assert {("prompt.version.create", "ana"), ("prompt.policy.set", "root"), ("prompt.change.approve", "olga"),
            ("prompt.label.move", "ana"), ("guardrail_policy.version.create", "ana"), ("index.snapshot", "ana"),
            ("index.rollback", "ops"), ("request.explain", "auditor"), ("audit.export", "auditor"),
            ("evidence_pack.export", "auditor"), ("costs.chargeback.export", "auditor")} - done == set()  # fmt: skip
    assert platform.audit.verify().ok


def test_retention_by_project_clears_questions_and_deletes_old_feedback(tmp_path: Path, database_url: str) -> None:
    from llmops._settings import ObservabilitySettings, RetentionSettings

    apps = [RagConfig(name="handbook-rag", min_similarity=-1.0), RagConfig(name="legal-rag", project="legal",
            min_similarity=-1.0)]  # fmt: skip
    strict = RetentionSettings(content_max_age_days=1, feedback_max_age_days=2)
    observability = ObservabilitySettings(retention_by_project={"legal": strict})
    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, rag_apps=apps, observability=observability)
    platform = Platform(settings, embedder=HashEmbedder(), providers={LOCAL_MODEL: ScriptedProvider("15 days [1].")})
    try:
        platform.knowledge.ingest(SAMPLES)
        legal = asyncio.run(platform.rag("legal-rag").ask("How many PTO days?"))
        handbook = asyncio.run(platform.rag("handbook-rag").ask("How many PTO days?"))
        for answer in (legal, handbook):
            platform.feedback.record(answer.request_id, kind="thumbs", value="down", comment="wrong")
        assert platform.trace_retention.policy("legal-rag") == strict
        assert platform.trace_retention.policy("handbook-rag") == settings.observability.retention

        assert platform.apply_retention()["content_cleared"] == 0  # nothing old enough yet
        done = platform.apply_retention(now=datetime.now(UTC) + timedelta(days=3))
        assert done["content_cleared"] == 1 and done["feedback"] == 1 and done["traces"] == 0
        kept = platform.traces.get(legal.request_id)  # the trace stays, its question and answer go
        assert "llmops.rag.question" not in json.dumps(kept) and "llmops.rag.answer" not in json.dumps(kept)
        assert kept["spans"]
        other = platform.traces.get(handbook.request_id)
        assert other["attributes"]["llmops.rag.question"] == "How many PTO days?"
        assert [f.request_id for f in platform.feedback.find()] == [handbook.request_id]
    finally:
        platform.close()
