"""Access control through the real components: `llmops up` with keys required, keys and roles made with the CLI,
two projects' documents ingested with `llmops ingest --project`, the bundled embedding model and LLM.

Shows: a key acts only in its project (another project's app, documents and traces are not found, whatever the
metadata filter says); a revoked key stops working; the key never appears in the server's log, in traces or
anywhere in the database.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from ..conftest import SAMPLES
from .conftest import LLMOPS, clean_env, llmops_up

LEGAL_DOC = """# Project Heron

The merger codename is BLUEHERON. Only the legal team may know the closing date, which is the fifth of May.
"""


@dataclass
class Deployment:
    base_url: str
    data_dir: Path
    env: dict[str, str]
    log: Path
    support_key: str
    legal_key: str

    def cli(self, *args: str) -> str:
        result = subprocess.run([LLMOPS, *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("access")
    data_dir = root / "data"
    config = root / "llmops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "auth": {"required": True},
                "rag_apps": [
                    {"name": "support-rag", "project": "support", "min_similarity": 0.1},
                    {"name": "legal-rag", "project": "legal", "min_similarity": 0.1},
                ],
            }
        )
    )
    env = clean_env(data_dir, LLMOPS_CONFIG=str(config))
    handbook, legal = root / "handbook", root / "legal"
    shutil.copytree(SAMPLES, handbook)
    legal.mkdir()
    (legal / "heron.md").write_text(LEGAL_DOC)
    deployment = Deployment("", data_dir, env, root / "server.log", "", "")
    deployment.cli("ingest", str(handbook), "--project", "support")
    deployment.cli("ingest", str(legal), "--project", "legal")
    for user, project in (("support-bot", "support"), ("counsel", "legal")):
        deployment.cli("users", "add", user, "--user", "admin")
        deployment.cli("roles", "grant", user, "editor", "--project", project, "--user", "admin")
    created = {
        project: json.loads(deployment.cli("keys", "create", user, "--project", project, "--json"))
        for user, project in (("support-bot", "support"), ("counsel", "legal"))
    }
    deployment.support_key, deployment.legal_key = created["support"]["key"], created["legal"]["key"]
    with llmops_up(env, deployment.log, timeout=180) as deployment.base_url:
        yield deployment


def _as(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_a_key_sees_only_its_projects_documents(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.base_url, timeout=120) as client:
        assert client.post("/api/knowledge/search", json={"query": "merger codename"}).status_code == 401
        legal = client.post(
            "/api/knowledge/search", json={"query": "merger codename"}, headers=_as(deployment.legal_key)
        )
        assert "BLUEHERON" in legal.json()["hits"][0]["text"]
        for crafted in (None, {"project": "legal"}, {"project": {"$in": ["legal", "support"]}},
                        {"project": {"$ne": "support"}}, {"source": {"$ne": ""}}):  # fmt: skip
            found = client.post("/api/knowledge/search", json={"query": "merger codename BLUEHERON", "k": 20,
                                "filter": crafted}, headers=_as(deployment.support_key))  # fmt: skip
            assert found.status_code == 200, found.text
            assert all("BLUEHERON" not in hit["text"] for hit in found.json()["hits"]), crafted
        assert client.get("/api/whoami", headers=_as(deployment.support_key)).json()["project"] == "support"


def test_a_key_cannot_use_another_projects_app_or_see_its_traces(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.base_url, timeout=300) as client:
        asked = client.post("/api/ask", json={"question": "How many PTO days do new employees get?",
                            "app": "support-rag"}, headers=_as(deployment.support_key))  # fmt: skip
        assert asked.status_code == 200, asked.text
        request_id = asked.json()["request_id"]
        other = client.post("/api/ask", json={"question": "What is the merger codename?", "app": "legal-rag"},
                            headers=_as(deployment.support_key))  # fmt: skip
        assert other.status_code == 404
        assert client.get(f"/api/traces/{request_id}", headers=_as(deployment.support_key)).status_code == 200
        denied = client.get(f"/api/traces/{request_id}", headers=_as(deployment.legal_key))
        assert denied.status_code == 404 and denied.headers["x-llmops-denied"] == "object"
        listed = client.get("/api/traces", headers=_as(deployment.legal_key)).json()
        assert request_id not in json.dumps(listed)


def test_the_key_is_never_in_logs_traces_or_the_database(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.base_url, timeout=300) as client:
        chat = client.post("/v1/chat/completions", json={"model": "support-rag", "messages": [
            {"role": "user", "content": "How many PTO days do new employees get?"}]},
            headers=_as(deployment.support_key))  # fmt: skip
        assert chat.status_code == 200, chat.text
        bad = client.get("/api/whoami", headers=_as(deployment.support_key + "x"))
        assert bad.status_code == 401 and deployment.support_key not in bad.text
    deployment.cli("traces")  # drains the journal into the store
    time.sleep(1)
    files = [path for path in deployment.data_dir.rglob("*") if path.is_file()]
    for key in (deployment.support_key, deployment.legal_key):
        assert key not in deployment.log.read_text()
        secret = key.split("_", 2)[2]
        for path in files:  # the database, the trace journal, the indexes, caches
            assert secret.encode() not in path.read_bytes(), path
        with sqlite3.connect(deployment.data_dir / "llmops.db") as db:
            tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for row in db.execute(f'SELECT * FROM "{table}"'):
                    assert secret not in repr(row), table


def test_a_revoked_key_stops_working(deployment: Deployment) -> None:
    created = json.loads(deployment.cli("keys", "create", "support-bot", "--project", "support", "--json"))
    with httpx.Client(base_url=deployment.base_url, timeout=60) as client:
        assert client.get("/api/whoami", headers=_as(created["key"])).status_code == 200
        deployment.cli("keys", "revoke", created["id"])
        deadline = time.monotonic() + 15  # another process revoked it: the server's cache holds it for 5 s
        while client.get("/api/whoami", headers=_as(created["key"])).status_code == 200:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.5)
        refused = client.get("/api/whoami", headers=_as(created["key"]))
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
