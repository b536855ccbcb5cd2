"""Alembic environment: runs on the connection `Store.migrate` hands over, or on the URL in alembic's config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

# Every package keeps its tables beside its code; autogenerate needs to see them all.
from llmops.evaluation import _tables as _evaluation_tables  # noqa: F401
from llmops.gateway import _tables as _gateway_tables  # noqa: F401
from llmops.governance import _tables as _governance_tables  # noqa: F401
from llmops.guardrails import _tables as _guardrail_tables  # noqa: F401
from llmops.knowledge import _tables as _knowledge_tables  # noqa: F401
from llmops.loop import _tables as _loop_tables  # noqa: F401
from llmops.observability import _tables as _observability_tables  # noqa: F401
from llmops.prompts import _tables as _prompt_tables  # noqa: F401
from llmops.store import Base

metadata = Base.metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///.llmops/llmops.db")
    with engine.begin() as conn:
        _run(conn)
