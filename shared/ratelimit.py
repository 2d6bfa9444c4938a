"""A rate limiter shared by every worker: GCRA buckets in Redis, checked atomically by one Lua script.

Celery's `rate_limit` is per worker process; provider limits are per account, sender or chat
across all workers, so they live here. Nothing sleeps: `acquire` says how long to wait and
`reserve` books a future slot, and the caller reschedules the task with that countdown.

Keys are stored as-is under the prefix, so callers hash destinations before building a key.
All keys of one call must live on one Redis node (a single instance, or one hash slot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

# The rates the script can represent: intervals of 1 µs to 1,000 s, so every TAT, tolerance and
# expiry stays a small exact integer. Any other positive rate is clamped into this range.
MIN_RATE = 0.001
MAX_RATE = 1_000_000.0
# The longest wait or pause (a year): longer ones, even infinite, are clamped to it.
MAX_WAIT_SECONDS = 365 * 24 * 3600.0

# Times are integer microseconds of Redis server time, so every host agrees and Lua's doubles
# stay exact. Per key the value is the TAT (theoretical arrival time): the bucket is full once
# TAT <= now, and an event at time t conforms when t >= TAT - (burst - 1) * interval.
# ARGV: mode ("acquire" | "reserve" | "rebook" | "pause"), max_wait_us (for "pause": the pause),
# booked_ago_us (for "rebook": how long ago the event's earlier slot was), then interval_us and
# tolerance_us per key. "rebook" is "reserve" for an event that already holds a slot it could
# not use in time: on every key where that slot is still the last booking (no booking after
# it: TAT within half an interval of slot + interval) it is given back first, so a late event
# never waits behind its own earlier booking; on other keys the old slot is simply left unused.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local booked = nil
if ARGV[1] == 'rebook' then booked = now - tonumber(ARGV[3]) end
local tats = {}
local slot = now
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if booked and tat > booked and tat <= booked + interval + interval / 2 then
    tat = tat - interval
  end
  if tat < now then tat = now end
  tats[i] = tat
  local conforms_at = tat - tonumber(ARGV[3 + 2 * i])
  if conforms_at > slot then slot = conforms_at end
end
if ARGV[1] == 'pause' then
  local resume = now + tonumber(ARGV[2])
  for i, key in ipairs(KEYS) do
    local tat = math.max(tats[i], resume + tonumber(ARGV[3 + 2 * i]))
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  return 0
end
local delay = slot - now
if delay > 0 and (ARGV[1] == 'acquire' or delay > tonumber(ARGV[2])) then
  return delay
end
for i, key in ipairs(KEYS) do
  local tat = math.max(tats[i], slot) + tonumber(ARGV[2 + 2 * i])
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
return delay
"""


@dataclass(frozen=True)
class Limit:
    """At most `rate` events per second on `key`, allowing `burst` at once; rate None or <= 0 means
    no limit, and other rates are clamped to [MIN_RATE, MAX_RATE] (NaN: MIN_RATE)."""

    key: str
    rate: float | None
    burst: int = 1


class RateLimiter:
    """Checks and books events against several `Limit`s at once, atomically, in one round trip."""

    def __init__(self, redis_client: redis.Redis, *, prefix: str = "corbi:rl:") -> None:
        self._prefix = prefix
        self._redis = redis_client
        self._script = redis_client.register_script(_GCRA)

    def acquire(self, limits: Sequence[Limit]) -> float:
        """0.0 after taking one event from every limit; otherwise the seconds until all would
        allow it (> 0), having taken nothing. Raises redis.RedisError if Redis is unreachable."""
        return self._run("acquire", limits, max_wait=0.0)

    def reserve(self, limits: Sequence[Limit], *, max_wait: float = 300.0) -> float:
        """Seconds until the earliest slot at which every limit allows one more event, booked now
        (0.0 if the slot is now). A result above `max_wait` means nothing was booked: retry later.
        Raises redis.RedisError if Redis is unreachable."""
        return self._run("reserve", limits, max_wait=max_wait)

    def reserve_many(
        self,
        requests: Sequence[Sequence[Limit]],
        *,
        max_wait: float = 300.0,
        booked_ago: Sequence[float | None] | None = None,
    ) -> list[float | Exception]:
        """`reserve` for several events in one round trip, booked in order (a batch of sends).

        `booked_ago[i]`, when given and not None, says event i already holds a slot that many
        seconds in the past which it could not use in time: that slot is given back on every
        key where nothing was booked after it, so the event does not wait behind itself.

        Each element of the result is what `reserve` would have returned for that event, or
        the error Redis answered for that event alone (e.g. a key holding another type): one
        bad key never fails the others. Raises redis.RedisError if Redis is unreachable."""
        ago = list(booked_ago) if booked_ago is not None else [None] * len(requests)
        if len(ago) != len(requests):
            raise ValueError("booked_ago must have one entry per request")
        calls = [
            self._args("reserve", limits, max_wait=max_wait)
            if late is None
            else self._args("rebook", limits, max_wait=max_wait, booked_ago=late)
            for limits, late in zip(requests, ago, strict=True)
        ]
        pending = [call for call in calls if call is not None]
        if not pending:
            return [0.0] * len(calls)
        pipe = self._redis.pipeline(transaction=False)
        for keys, args in pending:
            self._script(keys=keys, args=args, client=pipe)
        answers = iter(pipe.execute(raise_on_error=False))
        return [0.0 if call is None else _seconds(next(answers)) for call in calls]

    def pause(self, limits: Sequence[Limit], seconds: float) -> None:
        """Allow no event on any of `limits` for `seconds` (the provider said wait): every other
        sender of the same account then books its slot after the pause instead of being refused.
        Raises redis.RedisError if Redis is unreachable."""
        if seconds > 0:
            self._run("pause", limits, max_wait=seconds)

    def _run(self, mode: str, limits: Sequence[Limit], *, max_wait: float) -> float:
        call = self._args(mode, limits, max_wait=max_wait)
        if call is None:
            return 0.0
        keys, args = call
        return int(self._script(keys=keys, args=args)) / 1_000_000

    def _args(
        self, mode: str, limits: Sequence[Limit], *, max_wait: float, booked_ago: float = 0.0
    ) -> tuple[list[str], list[object]] | None:
        """The script's KEYS and ARGV for one call, or None when no limit is active."""
        # `not rate <= 0` keeps NaN: it is clamped like any other bad rate, never "no limit".
        active = [limit for limit in limits if limit.rate is not None and not limit.rate <= 0]
        if not active:
            return None
        keys = [self._prefix + limit.key for limit in active]
        if len(set(keys)) != len(keys):
            raise ValueError("each key may appear only once per call")
        args: list[object] = [
            mode,
            round(_bounded(max_wait, 0.0, MAX_WAIT_SECONDS) * 1_000_000),
            round(_bounded(booked_ago, 0.0, MAX_WAIT_SECONDS) * 1_000_000),
        ]
        for limit in active:
            if limit.burst < 1:
                raise ValueError(f"burst must be >= 1, got {limit.burst}")
            interval = round(1_000_000 / _bounded(float(limit.rate or 0), MIN_RATE, MAX_RATE))
            args += [interval, (limit.burst - 1) * interval]
        return keys, args


def _bounded(value: float, low: float, high: float) -> float:
    """`value` clamped to [low, high]; NaN becomes `low` (the most cautious rate)."""
    return low if math.isnan(value) else min(max(value, low), high)


def _seconds(answer: Any) -> float | Exception:
    """One pipelined script answer in seconds, or the error it returned."""
    if isinstance(answer, Exception):
        return answer
    return int(answer) / 1_000_000
