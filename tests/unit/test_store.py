"""The store on SQLite and PostgreSQL: same migrations, same behaviour."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from llmops.knowledge._tables import ChunkRow, DocumentRow
from llmops.prompts._tables import PromptRow, PromptVersionRow
from llmops.store import Store, StoreError

TABLES = {
    "alembic_version", "chunks", "documents", "index_snapshots", "prompt_labels", "prompt_versions", "prompts",
    "spans", "traces", "prompt_stages", "prompt_history", "prompt_policies", "prompt_change_requests",
    "prompt_reviews", "prompt_checks", "prompt_experiments", "prompt_experiment_outcomes", "project_roles",
    "gateway_calls", "price_books", "gateway_call_repricings", "guardrail_policies", "guardrail_policy_versions",
    "guardrail_policy_labels", "guardrail_policy_history", "knowledge_sources", "snapshot_changes",
    "chunking_configs", "embedding_cache", "knowledge_index_state", "eval_datasets", "eval_dataset_versions",
    "eval_dataset_items", "eval_dataset_drafts", "eval_experiments", "eval_results", "eval_online_scores",
    "request_metrics", "drift_observations", "drift_reports", "feedback", "trigger_firings", "action_runs",
    "review_items", "trigger_rules", "audit_log", "projects", "principals", "api_keys", "project_objects",
}  # fmt: skip
HEAD = "0009"


def test_migrate_creates_every_table_and_is_idempotent(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    store.migrate()
    assert set(sa.inspect(store.engine).get_table_names()) >= TABLES
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    store.close()


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/wal.db")
    store.migrate()
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    store.close()


def _document(doc_id: str = "d1") -> DocumentRow:
    return DocumentRow(
        id=doc_id,
        source=f"/docs/{doc_id}.md",
        title="T",
        content_hash="h",
        parser="markdown",
        size_bytes=1,
        ingested_at=datetime.now(UTC),
        meta={"author": "A"},
    )


def _chunk(chunk_id: str, doc_id: str = "d1") -> ChunkRow:
    return ChunkRow(
        id=chunk_id,
        document_id=doc_id,
        ordinal=0,
        text="text",
        token_count=1,
        heading=None,
        page=None,
        start_char=0,
        end_char=4,
        embedding_model="m",
        embedding=b"\x00\x01\x02\x03",
    )


def test_session_commits_and_rolls_back(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    with store.session() as session:
        session.add(_document())
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(_document("d2"))
        session.flush()
        raise RuntimeError("abort")
    with store.session() as session:
        ids = session.scalars(sa.select(DocumentRow.id)).all()
        stored = session.get(DocumentRow, "d1")
        assert stored is not None and stored.meta == {"author": "A"}
    assert ids == ["d1"]
    store.close()


def test_chunks_cascade_with_their_document_and_bytes_round_trip(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    with store.session() as session:
        session.add(_document())
        session.flush()
        session.add_all([_chunk("c1"), _chunk("c2")])
    with store.session() as session:
        chunk = session.get(ChunkRow, "c1")
        assert chunk is not None and bytes(chunk.embedding) == b"\x00\x01\x02\x03"
    with store.session() as session:
        session.execute(sa.delete(DocumentRow).where(DocumentRow.id == "d1"))
    with store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ChunkRow)) == 0
    store.close()


def test_a_chunk_needs_its_document(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(_chunk("orphan", doc_id="missing"))
    store.close()


def test_prompt_version_numbers_are_unique(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    now = datetime.now(UTC)
    with store.session() as session:
        session.add(PromptRow(name="p", description="", created_at=now))
        session.flush()
        session.add(_version(now))
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(_version(now))
    store.close()


def _version(now: datetime) -> PromptVersionRow:
    return PromptVersionRow(
        prompt_name="p",
        version=1,
        messages=[{"role": "user", "content": "x"}],
        variables=[],
        params={},
        content_hash="h",
        author="a",
        commit_message="",
        created_at=now,
    )


def test_unreachable_database_is_a_clear_error() -> None:
    store = Store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError, match="cannot migrate the store at postgresql"):
        store.migrate()


def test_password_is_hidden_in_messages() -> None:
    store = Store("postgresql+psycopg://user:s3cret@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError) as raised:
        store.migrate()
    assert "s3cret" not in str(raised.value)


def _store_at(database_url: str, revision: str) -> Store:
    """A store whose schema stops at migration ``revision`` (to test the upgrades after it)."""
    from alembic import command
    from alembic.config import Config

    store = Store(database_url)
    config = Config()
    config.set_main_option("script_location", str(resources.files("llmops.store") / "migrations"))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return store


def test_upgrading_keeps_existing_labels(database_url: str) -> None:
    """A database made by 0001 keeps its labels when 0002 makes labels per environment (they land in dev)."""
    store = _store_at(database_url, "0001")
    now = datetime.now(UTC)
    with store.engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO prompts VALUES ('p', '', :t)"), {"t": now})
        connection.execute(sa.text("INSERT INTO prompt_labels VALUES ('p', 'production', 1, :t, 'x')"), {"t": now})
    store.migrate()
    with store.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT prompt_name, environment, label, version FROM prompt_labels")).all()
    assert [tuple(r) for r in rows] == [("p", "dev", "production", 1)]
    store.close()


def test_upgrading_indexes_the_request_of_each_held_answer(database_url: str) -> None:
    """0009 gives review items that already hold an answer its request id; other items get none."""
    store = _store_at(database_url, "0008")
    insert = sa.text(
        "INSERT INTO review_items (id, created_at, title, details, status) VALUES (:id, :t, 'x', :d, 'open')"
    )
    now = datetime.now(UTC)
    with store.engine.begin() as connection:
        held = {"request_id": "req_1", "held_answer": {"request_id": "req_1", "answer": "a"}}
        connection.execute(insert, {"id": "rev_held", "t": now, "d": json.dumps(held)})
        connection.execute(insert, {"id": "rev_other", "t": now, "d": json.dumps({"rule": "r"})})
    store.migrate()
    with store.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, request_id FROM review_items ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("rev_held", "req_1"), ("rev_other", None)]
    store.close()


def test_the_migrations_build_exactly_the_tables_the_code_declares(database_url: str) -> None:
    """A table or column added to a package's tables without a migration (or the reverse) fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import llmops._platform  # noqa: F401 - registers every package's tables on the shared metadata
    from llmops.store import Base

    store = Store(database_url)
    store.migrate()
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    store.close()
