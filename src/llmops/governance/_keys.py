"""API keys: made for a principal in a project, shown once, kept as a hash, scoped, expiring and revocable.

>>> record, secret = keys.create("support-bot", "support", by="ana", scopes=["invoke"])  # doctest: +SKIP
>>> keys.authenticate(secret).principal                                                # doctest: +SKIP
'support-bot'

A key is ``llmops_`` + its id + ``_`` + 43 random URL-safe characters (256 bits). Only the SHA-256 of the whole key
is stored, so a copy of the database does not give anyone a working key; the id (not secret) names the key in
listings, logs and the audit log. Checking a key costs a hash and a dictionary lookup: verified keys are cached
for ``cache_ttl_s`` seconds, so a revocation made on another replica takes effect within that time (at once on
this one).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from llmops.governance._roles import PERMISSIONS
from llmops.governance._tables import ApiKeyRow, PrincipalRow, ProjectRow
from llmops.store import AuditHook, Store

__all__ = ["KEY_PREFIX", "SCOPES", "ApiKeys", "InvalidKeyError", "StoredKey"]

KEY_PREFIX = "llmops_"
SCOPES = frozenset().union(*PERMISSIONS.values())
_NEGATIVE_CACHE_SIZE = 10_000
_USAGE_WRITE_EVERY_S = 60.0


class InvalidKeyError(Exception):
    """The key presented is unknown, revoked or expired (the message says which, never the key)."""


@dataclass(frozen=True)
class StoredKey:
    """What a verified key acts as. Never holds the secret."""

    id: str
    name: str
    principal: str
    project: str
    scopes: frozenset[str]
    team: str | None
    app: str | None
    cost_centre: str | None
    expires_at: datetime | None


class ApiKeys:
    """Creates, lists, revokes and verifies API keys; key creation and revocation go to the audit log."""

    def __init__(self, store: Store, *, audit: AuditHook | None = None, cache_ttl_s: float = 5.0) -> None:
        self._store = store
        self._audit = audit
        self._ttl = cache_ttl_s
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[float, StoredKey | str]] = {}  # hash -> (checked at, key or why refused)
        self._used: dict[str, float] = {}  # key id -> last use not yet written (monotonic)
        self._written: dict[str, float] = {}

    def create(
        self,
        principal: str,
        project: str,
        *,
        by: str,
        name: str = "",
        scopes: Iterable[str] = (),
        expires_in: timedelta | None = None,
        team: str | None = None,
        app: str | None = None,
        cost_centre: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Make a key; returns its record and the key itself, which is not stored and cannot be shown again."""
        wanted = frozenset(scopes)
        if unknown := wanted - SCOPES:
            raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}; scopes are {', '.join(sorted(SCOPES))}")
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValueError("a key must expire in the future")
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = datetime.now(UTC)
        with self._store.session() as session:
            who = session.get(PrincipalRow, principal)
            if who is None:
                raise LookupError(f"no user or service account {principal!r}: add it first (llmops users add)")
            if who.disabled_at is not None:
                raise ValueError(f"{principal!r} is disabled: it cannot get new keys")
            if session.get(ProjectRow, project) is None:
                raise LookupError(f"no project {project!r}: create it first (llmops projects create)")
            row = ApiKeyRow(
                id=key_id,
                secret_hash=_digest(secret),
                name=name,
                principal=principal,
                project=project,
                scopes=sorted(wanted),
                team=team,
                app=app,
                cost_centre=cost_centre,
                created_by=by,
                created_at=now,
                expires_at=now + expires_in if expires_in is not None else None,
            )
            session.add(row)
            record = _record(row)
        if self._audit is not None:
            self._audit(by, "key.create", "api_key", key_id, after=record, details=_audit_details(record))
        return record, secret

    def revoke(self, key_id: str, *, by: str) -> dict[str, Any]:
        """Revoke a key now (this replica at once, others within the cache time); revoking twice is a no-op."""
        with self._store.session() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise LookupError(f"no API key {key_id!r}")
            already = row.revoked_at is not None
            if not already:
                row.revoked_at, row.revoked_by = datetime.now(UTC), by
            record = _record(row)
            digest = row.secret_hash
        with self._lock:
            self._verified.pop(digest, None)
        if not already and self._audit is not None:
            self._audit(by, "key.revoke", "api_key", key_id, after=record, details=_audit_details(record))
        return record

    def revoke_all(self, principal: str, *, by: str) -> list[str]:
        """Revoke every live key of ``principal``; returns their ids."""
        with self._store.session() as session:
            ids = list(
                session.scalars(
                    select(ApiKeyRow.id).where(ApiKeyRow.principal == principal, ApiKeyRow.revoked_at.is_(None))
                )
            )
        for key_id in ids:
            self.revoke(key_id, by=by)
        return ids

    def get(self, key_id: str) -> dict[str, Any] | None:
        with self._store.session() as session:
            row = session.get(ApiKeyRow, key_id)
            return _record(row) if row is not None else None

    def list(self, *, project: str | None = None, principal: str | None = None) -> list[dict[str, Any]]:
        """Key records (never the key or its hash), newest first."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at.desc())
        if project is not None:
            query = query.where(ApiKeyRow.project == project)
        if principal is not None:
            query = query.where(ApiKeyRow.principal == principal)
        with self._store.session() as session:
            return [_record(row) for row in session.scalars(query)]

    def centres(self) -> dict[str, str]:
        """The cost centre of each key that names one, by key id (the ledger names calls by key id)."""
        with self._store.session() as session:
            rows = session.execute(
                select(ApiKeyRow.id, ApiKeyRow.cost_centre).where(ApiKeyRow.cost_centre.is_not(None))
            )
            return {key_id: centre for key_id, centre in rows if centre}

    def authenticate(self, secret: str) -> StoredKey:
        """The key's identity, or InvalidKeyError saying why it is refused (unknown, revoked, expired)."""
        found = self._check(secret, cached_only=False)
        assert found is not None
        return found

    def peek(self, secret: str) -> StoredKey | None:
        """`authenticate` from memory: None when the store would have to be read (no I/O, for event loops)."""
        return self._check(secret, cached_only=True)

    def _check(self, secret: str, *, cached_only: bool) -> StoredKey | None:
        digest = _digest(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._verified.get(digest)
        if cached is None or now - cached[0] > self._ttl:
            if cached_only:
                return None
            cached = (now, self._load(digest))
            with self._lock:
                if len(self._verified) >= _NEGATIVE_CACHE_SIZE:
                    self._verified.clear()  # a flood of made-up keys must not grow memory without bound
                self._verified[digest] = cached
        found = cached[1]
        if isinstance(found, str):
            raise InvalidKeyError(found)
        if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
            raise InvalidKeyError(f"API key {found.id} expired at {found.expires_at.isoformat(timespec='seconds')}")
        with self._lock:
            self._used[found.id] = time.time()
        return found

    def write_usage(self) -> int:
        """Store when each key was last used (at most once a minute per key; the server calls this periodically,
        so the request path never writes). Returns the number of keys updated."""
        now = time.monotonic()
        with self._lock:
            due = {k: t for k, t in self._used.items() if now - self._written.get(k, -1e9) >= _USAGE_WRITE_EVERY_S}
            for key_id in due:
                self._used.pop(key_id, None)
                self._written[key_id] = now
        if not due:
            return 0
        with self._store.session() as session:
            for key_id, used_at in due.items():
                session.execute(
                    update(ApiKeyRow)
                    .where(ApiKeyRow.id == key_id)
                    .values(last_used_at=datetime.fromtimestamp(used_at, UTC))
                )
        return len(due)

    def _load(self, digest: str) -> StoredKey | str:
        with self._store.session() as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.secret_hash == digest)).one_or_none()
            if row is None:
                return "unknown API key"
            if row.revoked_at is not None:
                return f"API key {row.id} was revoked"
            who = session.get(PrincipalRow, row.principal)
            if who is None or who.disabled_at is not None:
                return f"the owner of API key {row.id} is disabled"
            return StoredKey(
                id=row.id,
                name=row.name,
                principal=row.principal,
                project=row.project,
                scopes=frozenset(row.scopes),
                team=row.team,
                app=row.app,
                cost_centre=row.cost_centre,
                expires_at=_utc(row.expires_at),
            )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _record(row: ApiKeyRow) -> dict[str, Any]:
    def when(moment: datetime | None) -> str | None:
        moment = _utc(moment)
        return moment.isoformat() if moment is not None else None

    expires = _utc(row.expires_at)
    state = "revoked" if row.revoked_at else "expired" if expires and expires <= datetime.now(UTC) else "active"
    return {
        "id": row.id,
        "name": row.name,
        "principal": row.principal,
        "project": row.project,
        "scopes": list(row.scopes),
        "team": row.team,
        "app": row.app,
        "cost_centre": row.cost_centre,
        "created_by": row.created_by,
        "created_at": when(row.created_at),
        "expires_at": when(row.expires_at),
        "revoked_at": when(row.revoked_at),
        "revoked_by": row.revoked_by,
        "last_used_at": when(row.last_used_at),
        "state": state,
    }


def _audit_details(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("principal", "project", "scopes", "expires_at", "team", "app", "cost_centre")}
