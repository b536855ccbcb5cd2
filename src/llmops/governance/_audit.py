"""The audit log: an append-only, hash-chained record of every change and sensitive read.

Each entry's hash covers its content and the previous entry's hash, so editing, deleting or reordering entries in
the database breaks the chain from that point, and `AuditLog.verify` names the first entry that does not hold.
Entries are numbered without gaps; two writers racing for the same number collide on the primary key and the
loser retries with the next one, so the chain stays linear across processes and replicas.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from llmops.governance._tables import AuditEntryRow
from llmops.store import Store

__all__ = ["GENESIS_HASH", "AuditLog", "AuditVerification", "content_hash"]

GENESIS_HASH = "0" * 64
_RETRIES = 50


def content_hash(value: Any) -> str:
    """A stable SHA-256 of any JSON-able value (sorted keys), for an entry's before/after state."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC)).hexdigest()


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "first_bad_seq": self.first_bad_seq, "problem": self.problem}


class AuditLog:
    """>>> audit.record("alice", "prompt.label.move", "prompt", "rag-default:production", after={"version": 3})
    ... # doctest: +SKIP
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        # Writers in this process take turns; writers in other processes (replicas, the CLI) race for the next
        # number and the loser retries after a short, jittered wait.
        self._lock = threading.Lock()

    def record(
        self,
        actor: str,
        action: str,
        object_type: str,
        object_id: str,
        *,
        before: Any = None,
        after: Any = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Append an entry and return its sequence number. ``before``/``after`` are stored as hashes only."""
        details = details or {}
        with self._lock:
            return self._append(actor, action, object_type, object_id, before, after, details)

    def _append(
        self,
        actor: str,
        action: str,
        object_type: str,
        object_id: str,
        before: Any,
        after: Any,
        details: dict[str, Any],
    ) -> int:
        for attempt in range(_RETRIES):
            with self._store.session() as session:
                last = session.execute(
                    select(AuditEntryRow.seq, AuditEntryRow.entry_hash).order_by(AuditEntryRow.seq.desc()).limit(1)
                ).first()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
            fields = {
                "seq": seq,
                "at": datetime.now(UTC),
                "actor": actor,
                "action": action,
                "object_type": object_type,
                "object_id": object_id,
                "before_hash": content_hash(before) if before is not None else None,
                "after_hash": content_hash(after) if after is not None else None,
                "details": details,
                "prev_hash": prev,
            }
            row = AuditEntryRow(**fields, entry_hash=_entry_hash(fields))
            try:
                with self._store.session() as session:
                    session.add(row)
            except IntegrityError:  # another process took this number: chain onto its entry instead
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            return seq
        raise RuntimeError("could not append to the audit log: too much contention")

    def entries(
        self, *, since_seq: int = 0, action: str | None = None, object_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        query = select(AuditEntryRow).where(AuditEntryRow.seq > since_seq).order_by(AuditEntryRow.seq)
        if action is not None:
            query = query.where(AuditEntryRow.action.startswith(action))
        if object_id is not None:
            query = query.where(AuditEntryRow.object_id == object_id)
        if limit is not None:
            query = query.limit(limit)
        with self._store.session() as session:
            return [_as_dict(row) for row in session.scalars(query)]

    def count(self) -> int:
        with self._store.session() as session:
            return int(session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0)

    def verify(self) -> AuditVerification:
        """Walk the chain: numbering, links and each entry's hash. Names the first entry that does not hold."""
        expected_seq, prev, count = 1, GENESIS_HASH, 0
        for row in self._scan():
            count += 1
            entry = _as_dict(row)
            if row.seq != expected_seq:
                gap = f"entry {expected_seq} is missing" if row.seq > expected_seq else "entries are out of order"
                return AuditVerification(False, count, expected_seq, f"{gap} (found {row.seq})")
            if row.prev_hash != prev:
                return AuditVerification(
                    False, count, row.seq, f"entry {row.seq} does not link to entry {row.seq - 1}: deleted or moved"
                )
            fields = {k: v for k, v in entry.items() if k != "entry_hash"}
            if _entry_hash(fields) != row.entry_hash:
                return AuditVerification(False, count, row.seq, f"entry {row.seq} was edited: its hash does not match")
            prev, expected_seq = row.entry_hash, row.seq + 1
        return AuditVerification(True, count)

    def _scan(self, batch: int = 5_000) -> Iterator[AuditEntryRow]:
        after = 0
        while True:
            with self._store.session() as session:
                rows = list(
                    session.scalars(
                        select(AuditEntryRow).where(AuditEntryRow.seq > after).order_by(AuditEntryRow.seq).limit(batch)
                    )
                )
                session.expunge_all()
            if not rows:
                return
            yield from rows
            after = rows[-1].seq

    def export_jsonl(self) -> Iterator[bytes]:
        """Every entry, one JSON object per line, in chain order."""
        for row in self._scan():
            yield orjson.dumps(_as_dict(row)) + b"\n"


def _as_dict(row: AuditEntryRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": _utc(row.at).isoformat(),
        "actor": row.actor,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "before_hash": row.before_hash,
        "after_hash": row.after_hash,
        "details": row.details,
        "prev_hash": row.prev_hash,
        "entry_hash": row.entry_hash,
    }


def _entry_hash(fields: dict[str, Any]) -> str:
    canonical = dict(fields)
    at = canonical["at"]
    canonical["at"] = (_utc(at).isoformat()) if isinstance(at, datetime) else at
    return content_hash(canonical)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones in the session's zone."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
