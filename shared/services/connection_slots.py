"""Test Connection slots: how many tests may run at once per process and per organization."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.errors import ServiceError

logger = logging.getLogger(__name__)


class ConnectionTestBusy(ServiceError):
    """Too many connection tests are running (for the organization or in this process)."""

    code = "test_connection_busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, errors={"provider": [message]})
        self.retry_after = retry_after


# Per-org leases shared by every web process: a sorted set of lease ids scored by their test's
# deadline (Redis server time). A lease whose holder crashed is dropped LEASE_GRACE_FACTOR
# budgets after its deadline, by then its helper thread's socket timeouts have all expired.
_ORG_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local budget, limit, grace = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - grace)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tostring(tonumber(first[2]) - now)}
end
redis.call('ZADD', KEYS[1], now + budget, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil((budget + grace) * 1000))
return {1, '0'}
"""
LEASE_GRACE_FACTOR = 1.0
LEASE_PREFIX = "corbi:connection-test:org:"


@lru_cache(maxsize=4)
def _lease_script(url: str) -> Any:
    client = redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    return client.register_script(_ORG_LEASE)


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


@dataclass
class _Slot:
    """One admitted test: counted in this process (and in Redis per org) until its thread ends."""

    org_id: int
    deadline: float
    redis_url: str
    lease: str | None = None
    released: bool = False


class _TestSlots:
    """This process's running connection tests, by org; a slot is given back only when the
    helper thread really ends, so a thread stuck in a hanging socket keeps counting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[_Slot] = []

    def acquire(self, org_id: int, deadline: float, budget: float) -> _Slot:
        """A slot for one test of `org_id`, or ConnectionTestBusy with a Retry-After."""
        per_process = max(1, settings.TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS)
        per_org = max(1, settings.TEST_CONNECTION_MAX_CONCURRENT_PER_ORG)
        with self._lock:
            now = time.monotonic()
            same_org = [slot for slot in self._running if slot.org_id == org_id]
            for running, limit, whose in (
                (same_org, per_org, "this organization"),
                (self._running, per_process, "this server"),
            ):
                if len(running) >= limit:
                    wait = min(slot.deadline for slot in running) - now
                    raise ConnectionTestBusy(
                        f"{limit} connection tests are already running for {whose}; "
                        f"retry in {_retry_after(wait)} s.",
                        retry_after=_retry_after(wait),
                    )
            slot = _Slot(org_id=org_id, deadline=deadline, redis_url=settings.REDIS_URL)
            self._running.append(slot)
        try:
            slot.lease = _org_lease(slot.redis_url, org_id, budget, per_org)
        except ConnectionTestBusy:
            self.release(slot)
            raise
        return slot

    def release(self, slot: _Slot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            self._running.remove(slot)
        if slot.lease is not None:
            try:
                _lease_script(slot.redis_url).registered_client.zrem(
                    f"{LEASE_PREFIX}{slot.org_id}", slot.lease
                )
            except redis.RedisError:
                pass  # the lease expires on its own after its deadline plus the grace


def _org_lease(redis_url: str, org_id: int, budget: float, limit: int) -> str | None:
    """A Redis lease for one of the org's `limit` slots across processes; ConnectionTestBusy
    when all are taken. Fails open (None) when Redis is unavailable: the per-process bounds
    (which also bound each org in this process) still hold."""
    lease = uuid.uuid4().hex
    script = _lease_script(redis_url)
    try:
        granted, wait = script(
            keys=[f"{LEASE_PREFIX}{org_id}"],
            args=[lease, budget, limit, budget * LEASE_GRACE_FACTOR],
        )
    except redis.RedisError as error:
        logger.warning(
            "connection-test org limit not shared (Redis unavailable): %s", type(error).__name__
        )
        return None
    if not granted:
        retry = _retry_after(float(wait))
        raise ConnectionTestBusy(
            f"{limit} connection tests are already running for this organization; "
            f"retry in {retry} s.",
            retry_after=retry,
        )
    return lease


TEST_SLOTS = _TestSlots()
