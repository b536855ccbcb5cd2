"""Rate limits and money budgets per API key, user, team, app or tag, that hold under concurrency.

Before a call, each matching limit reserves what the call may use (one request, its token estimate, its worst-case
cost) with an atomic check-and-add on a counter for the current window; a reservation that would cross a hard limit
is refused with a 429 that names the limit. After the call the reservation is corrected to the actual usage. The
counters live in process by default and in Redis when configured (one Lua script per check-and-add, so replicas
share the limits and concurrent requests cannot overshoot them).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from llmops._settings import ApiKeyConfig, LimitConfig

__all__ = [
    "AuthenticationError",
    "Caller",
    "Counters",
    "InProcessCounters",
    "LimitEnforcer",
    "LimitExceededError",
    "RedisCounters",
    "Reservation",
    "identify",
]

logger = logging.getLogger("llmops.gateway")
_PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400, "month": 31 * 86_400}


class LimitExceededError(Exception):
    """A hard limit refused the call (HTTP 429)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthenticationError(Exception):
    """The API key is missing or unknown (HTTP 401)."""


@dataclass(frozen=True)
class Caller:
    """Who a call is attributed to: from the API key, the request's ``user``, and its metadata."""

    key_name: str | None = None
    user: str | None = None
    team: str | None = None
    app: str | None = None
    tags: tuple[str, ...] = ()

    def values(self, scope: str) -> list[str]:
        if scope == "global":
            return ["*"]
        if scope == "tag":
            return list(self.tags)
        value = {"key": self.key_name, "user": self.user, "team": self.team, "app": self.app}[scope]
        return [value] if value else []


def identify(
    bearer: str | None,
    keys: Sequence[ApiKeyConfig],
    *,
    require_key: bool,
    user: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Caller:
    """The caller for a request: the API key decides team/app/tags when it sets them; the request may add a user."""
    key: ApiKeyConfig | None = None
    if bearer:
        if keys:  # with no keys configured any bearer passes (unless keys are required): nothing to hash
            digest = hashlib.sha256(bearer.encode()).hexdigest()
            key = next((k for k in keys if k.sha256 == digest), None)
        if key is None and (require_key or keys):
            raise AuthenticationError("unknown API key")
    elif require_key:
        raise AuthenticationError("an API key is required: send Authorization: Bearer <key>")
    if key is None and not metadata:  # the usual gateway call: nothing more to merge
        return Caller(user=user or None)
    metadata = metadata or {}
    tags = tuple(dict.fromkeys([*(key.tags if key else []), *filter(None, metadata.get("tags", "").split(","))]))
    return Caller(
        key_name=key.name if key else None,
        user=(key.user if key and key.user else None) or user or metadata.get("user"),
        team=(key.team if key else None) or metadata.get("team"),
        app=(key.app if key else None) or metadata.get("app"),
        tags=tags,
    )


class Counters(Protocol):
    async def try_add(self, key: str, amount: float, limit: float, ttl: int) -> tuple[bool, float]:
        """Atomically add ``amount`` unless the result would exceed ``limit``; returns (added, value)."""
        ...

    async def add(self, key: str, amount: float, ttl: int) -> float:
        """Add (possibly a negative amount) unconditionally; returns the new value."""
        ...


class InProcessCounters:
    """Counters of one process: check-and-add under a lock, windows expire by time."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}  # key -> (value, expires at)
        self._lock = threading.Lock()

    def _current(self, key: str, now: float) -> float:
        entry = self._values.get(key)
        return entry[0] if entry and entry[1] > now else 0.0

    async def try_add(self, key: str, amount: float, limit: float, ttl: int) -> tuple[bool, float]:
        now = time.monotonic()
        with self._lock:
            value = self._current(key, now)
            if value + amount > limit:
                return False, value
            self._values[key] = (value + amount, self._values.get(key, (0.0, now + ttl))[1] if value else now + ttl)
            return True, value + amount

    async def add(self, key: str, amount: float, ttl: int) -> float:
        now = time.monotonic()
        with self._lock:
            value = self._current(key, now) + amount
            expires = self._values[key][1] if key in self._values and self._values[key][1] > now else now + ttl
            self._values[key] = (value, expires)
            return value


_TRY_ADD = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return {0, tostring(current)}
end
local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return {1, tostring(value)}
"""
_ADD = """
local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return tostring(value)
"""


class RedisCounters:
    """Counters shared by every replica, in Redis; each check-and-add is one atomic Lua script."""

    def __init__(self, url: str, *, prefix: str = "llmops:limit:") -> None:
        from redis import asyncio as redis_asyncio

        self._url = url
        self._prefix = prefix
        self._clients: dict[int, Any] = {}
        self._redis = redis_asyncio.Redis

    def _client(self) -> Any:
        import asyncio

        from redis.asyncio import BlockingConnectionPool

        loop = id(asyncio.get_running_loop())
        if loop not in self._clients:
            # A blocking pool: a burst of requests waits for a connection instead of failing with "too many".
            pool = BlockingConnectionPool.from_url(self._url, max_connections=64, timeout=10)
            self._clients[loop] = self._redis(connection_pool=pool)
        return self._clients[loop]

    async def try_add(self, key: str, amount: float, limit: float, ttl: int) -> tuple[bool, float]:
        added, value = await self._client().eval(_TRY_ADD, 1, self._prefix + key, amount, limit, ttl)
        return bool(added), float(value)

    async def add(self, key: str, amount: float, ttl: int) -> float:
        return float(await self._client().eval(_ADD, 1, self._prefix + key, amount, ttl))

    async def aclose(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(RuntimeError):  # its event loop is gone already
                await client.aclose()
        self._clients.clear()


@dataclass
class Reservation:
    """What one admitted call reserved, per counter, to be corrected once the call's usage is known."""

    entries: list[tuple[str, str, float, int]] = field(default_factory=list)  # (counter key, metric, amount, ttl)
    soft_alerts: list[str] = field(default_factory=list)


def _window(period: str, now: datetime) -> str:
    return {
        "minute": now.strftime("%Y%m%d%H%M"),
        "hour": now.strftime("%Y%m%d%H"),
        "day": now.strftime("%Y%m%d"),
        "month": now.strftime("%Y%m"),
    }[period]


class LimitEnforcer:
    def __init__(self, limits: Sequence[LimitConfig], counters: Counters) -> None:
        self._limits = list(limits)
        self.counters = counters

    @property
    def limits(self) -> list[LimitConfig]:
        return list(self._limits)

    def set_limit(self, limit: LimitConfig) -> LimitConfig | None:
        """Add a limit, or replace the one with the same name (a runbook throttling a caller); returns the one it
        replaced. The change holds in this process until restart: configuration stays the source of truth."""
        for i, existing in enumerate(self._limits):
            if existing.name == limit.name:
                self._limits[i] = limit
                return existing
        self._limits.append(limit)
        return None

    def applicable(self, caller: Caller) -> list[tuple[LimitConfig, str]]:
        return [
            (limit, value)
            for limit in self._limits
            for value in caller.values(limit.scope)
            if limit.value is None or limit.value == value
        ]

    async def admit(self, caller: Caller, *, tokens: int, max_cost: float) -> Reservation:
        """Reserve one request, ``tokens`` tokens and ``max_cost`` dollars on every limit that applies, or raise
        `LimitExceededError` (releasing what this call had reserved so far)."""
        reservation = Reservation()
        if not self._limits:  # nothing to reserve against (the usual configuration): no clock read, no loop
            return reservation
        now = datetime.now(UTC)
        try:
            for limit, value in self.applicable(caller):
                where = f"{limit.scope} {value}" if limit.scope != "global" else "everyone"
                minute = _window("minute", now)
                checks: list[tuple[str, float, float | None, int, str]] = [
                    ("requests", 1.0, limit.requests_per_minute, 120,
                     f"rate limit {limit.name!r}: {limit.requests_per_minute} requests per minute for {where}"),
                    ("tokens", float(tokens), limit.tokens_per_minute, 120,
                     f"rate limit {limit.name!r}: {limit.tokens_per_minute} tokens per minute for {where}"),
                ]  # fmt: skip
                spent = f"budget {limit.name!r}: ${limit.budget_usd} per {limit.period} for {where} is spent"
                checks.append(("usd", max_cost, limit.budget_usd, _PERIOD_SECONDS[limit.period] + 3600, spent))
                for metric, amount, cap, ttl, message in checks:
                    if cap is None:
                        continue
                    window = minute if metric != "usd" else _window(limit.period, now)
                    key = f"{limit.name}:{value}:{metric}:{window}"
                    added, current = await self.counters.try_add(key, amount, float(cap), ttl)
                    if not added:
                        retry = 60 - now.second if metric != "usd" else _PERIOD_SECONDS[limit.period]
                        raise LimitExceededError(f"{message} (used {current:g})", retry_after=retry)
                    reservation.entries.append((key, metric, amount, ttl))
        except LimitExceededError:
            await self.release(reservation)
            raise
        return reservation

    async def settle(self, reservation: Reservation, *, tokens: int, cost: float) -> list[str]:
        """Correct the reservation to the actual usage; returns the soft-budget alerts crossed."""
        alerts = []
        for key, metric, reserved, ttl in reservation.entries:
            actual = {"requests": 1.0, "tokens": float(tokens), "usd": cost}[metric]
            value = await self.counters.add(key, actual - reserved, ttl) if actual != reserved else None
            if metric == "usd":
                name = key.split(":", 1)[0]
                limit = next((x for x in self._limits if x.name == name), None)
                spent = value if value is not None else await self.counters.add(key, 0.0, ttl)
                soft = limit.soft_budget_usd if limit else None
                if limit and soft is not None and spent > soft:
                    alerts.append(f"budget {limit.name!r} passed its soft limit ${soft}: ${spent:.4f}")
        for alert in alerts:
            logger.warning(alert)
        return alerts

    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation entirely (the call was never made)."""
        for key, _metric, amount, ttl in reservation.entries:
            await self.counters.add(key, -amount, ttl)
        reservation.entries.clear()
