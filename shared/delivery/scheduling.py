"""When a send may run: its limits, retry backoff, and the slot and wave decision (pure)."""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.utils import timezone

from shared.models import Integration, Message, Provider
from shared.providers.registry import spec_for
from shared.ratelimit import Limit

# How the limiter stays exact and costs nothing when limits don't bind (README "Delivery"):
#
# * Every limit of r/s is a GCRA bucket with a burst of max(1, floor(r x RATE_LIMIT_WINDOW))
#   (window_burst): the slots that fit in the window (0.1 s) are free *now*, so a batch whose
#   slots all fit goes out at once, whatever its number of limits (Telegram: bot and chat).
#   Over any interval T at most r*T + burst sends start, and the long-run rate is exactly r.
# * A send whose slot is later waits for it: deferred messages run in waves, one task per
#   group of slots at most WAVE_SPAN apart, due at the group's *last* slot, so no send starts
#   before its slot and none starts more than WAVE_SPAN after it (plus the task's own delay).
# * A booked slot is used late, up to late_tolerance: 0.5 s under limits of 2/s and more
#   (a provider account that allows r/s takes a second's worth at once, and r x 0.5 s of
#   lateness plus the 0.1 s burst stays within it), SLOT_TOLERANCE (0.1 s) under slower ones,
#   which must sit that far under the provider's own limit (r / (1 - 0.1 r): Telegram chats
#   are 0.9/s against Telegram's 1/s). Later than that, the send asks the limiter again: while the limit has
#   room (it does not bind) the answer is "now", so a late wave is not deferred again.
#
# A task may run this much before its due time (clock skew between hosts) ...
EARLY_TOLERANCE = timedelta(seconds=0.05)
# ... and may use its booked rate-limit slot this late (late_tolerance) before asking again.
SLOT_TOLERANCE = timedelta(seconds=0.1)
LATE_TOLERANCE = timedelta(seconds=0.5)
# A send that gave up a late slot has its new slot's task run this much earlier at most: as
# early as its task was late, so a worker late every time still meets the new slot.
LATENESS_COMPENSATION = timedelta(seconds=1.0)
# Limits at least this fast (per second) take LATE_TOLERANCE; slower ones SLOT_TOLERANCE.
LATE_TOLERANCE_FROM_RATE = 2.0
# A slot at most this far ahead is now (Redis and worker clocks, rounding).
SEND_NOW = timedelta(seconds=0.005)
# Deferred slots at most this far apart run as one wave (one task, at the wave's last slot):
# half the tolerance, so a wave task late by up to the other half still uses its slots.
WAVE_SPAN = timedelta(seconds=0.05)


@dataclass(frozen=True)
class Clock:
    """One instant read on both clocks: `now` (wall, written to the DB) and `mono` (monotonic,
    for in-process deadlines that must not move with the wall clock)."""

    now: datetime
    mono: float

    @classmethod
    def read(cls) -> Clock:
        """The current instant."""
        return cls(now=timezone.now(), mono=time.monotonic())


class SlotVerdict(StrEnum):
    """BOOK: no usable slot yet, ask the limiter; SEND: the slot is now; WAIT: it is later;
    CHECK: the booked slot is later than some limits take by themselves: ask the limiter
    whether they still allow it (no later send booked on them), else BOOK."""

    BOOK = "book"
    SEND = "send"
    WAIT = "wait"
    CHECK = "check"


@dataclass(frozen=True)
class SlotDecision:
    """The verdict, with the monotonic time after which a SEND must not start (inf: no bound),
    the seconds a WAIT waits, and for a CHECK the limits to ask about and how late it is."""

    verdict: SlotVerdict
    send_by: float = math.inf
    wait: float = 0.0
    check: tuple[Limit, ...] = ()
    late: float = 0.0


def late_tolerance(limits: Sequence[Limit]) -> float:
    """How late (s) a send may use its booked slot under `limits` (the strictest limit wins):
    LATE_TOLERANCE under limits of LATE_TOLERANCE_FROM_RATE/s and more, SLOT_TOLERANCE under
    slower ones (Telegram's per-chat and per-group limits among them)."""
    tolerance = LATE_TOLERANCE.total_seconds()
    for lim in limits:
        if not lim.rate or lim.rate <= 0:
            continue
        if lim.rate < LATE_TOLERANCE_FROM_RATE:
            tolerance = SLOT_TOLERANCE.total_seconds()
    return tolerance


def window_burst(rate: float | None) -> int:
    """The burst of a limit of `rate`/s: the sends that fit in RATE_LIMIT_WINDOW_SECONDS, at
    least 1 (a slow limit's sends are spaced exactly)."""
    if not rate or rate <= 0 or not math.isfinite(rate):
        return 1
    return max(1, int(rate * settings.RATE_LIMIT_WINDOW_SECONDS + 1e-9))


def limit(key: str, rate: float) -> Limit:
    """A Limit of `rate`/s on `key` with the window's burst."""
    return Limit(key=key, rate=rate, burst=window_burst(rate))


def message_limits(message: Message, integration: Integration) -> list[Limit]:
    """The shared limits a send must fit: per (org, provider), plus per chat for Telegram."""
    extra = integration.extra if isinstance(integration.extra, dict) else {}
    rate = _configured_rate(extra.get("rate_limit_per_second"), message.provider)
    limits = [limit(f"{message.provider}:org:{message.organization_id}", rate)]
    if message.provider == Provider.TELEGRAM:
        chat = hashlib.sha256(message.to.encode()).hexdigest()[:16]
        chat_rate = (
            settings.TELEGRAM_GROUP_RATE
            if message.to.startswith("-")
            else settings.TELEGRAM_CHAT_RATE
        )
        limits.append(limit(f"telegram:chat:{integration.pk}:{chat}", chat_rate))
    return limits


def _configured_rate(value: Any, provider: str) -> float:
    """The integration's own rate when it is a positive finite number, else the provider's
    default: a value stored before validation bounded it must not break or lift the limit."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if value > 0:
            return float(value)
    return float(settings.RATE_LIMITS.get(provider, spec_for(provider).default_rate_per_second))


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter for the `retries`-th transient failure."""
    base = settings.DELIVERY_BACKOFF_BASE_SECONDS * (2 ** max(retries - 1, 0))
    return min(settings.DELIVERY_BACKOFF_MAX_SECONDS, base) * random.uniform(0.5, 1.5)


def is_due(next_attempt_at: datetime | None, now: datetime) -> bool:
    """Whether a row due at `next_attempt_at` may run at `now` (EARLY_TOLERANCE early at most)."""
    return not (next_attempt_at and next_attempt_at > now + EARLY_TOLERANCE)


def on_time_only(limits: Sequence[Limit], send_threads: int) -> bool:
    """Whether a send under `limits` must start by its slot (plus SLOT_TOLERANCE): a send may
    start late only when its account's limit is at least as many sends a second as there are
    send threads, so every thread starting a late send at once still fits a second's worth."""
    return any(lim.rate and lim.rate > 0 for lim in limits) and (
        (limits[0].rate or math.inf) < send_threads
    )


def slot_decision(
    limits: Sequence[Limit],
    clock: Clock,
    send_threads: int,
    *,
    booked_at: datetime | None = None,
    reserved_in: float | None = None,
) -> SlotDecision:
    """Whether a send under `limits` goes now, given the slot booked on its row (`booked_at`)
    or, once asked, the seconds until the slot the limiter just booked (`reserved_in`).

    A booked slot is used at most late_tolerance late (a wave runs at its last slot, so its
    members are late by up to WAVE_SPAN); later, the limits that cannot take that lateness
    are checked (CHECK: used if no later send is booked on them), else the limiter is asked
    again (BOOK), which answers "now" while the limit has room. A booked slot still ahead (a
    task run early) waits for it: no send starts before its slot. A reservation at most SEND_NOW ahead is now (the
    window's burst makes every slot that fits the window now); a later one waits.
    """
    tolerance = late_tolerance(limits)
    if reserved_in is None:
        if booked_at is None:
            return SlotDecision(SlotVerdict.BOOK)
        late = (clock.now - booked_at).total_seconds()
        if late > tolerance:
            check = tuple(lim for lim in limits if late > late_tolerance([lim]))
            return SlotDecision(SlotVerdict.CHECK, check=check, late=late)
        ahead = -late
        if ahead > SEND_NOW.total_seconds():
            return SlotDecision(SlotVerdict.WAIT, wait=ahead)
    elif reserved_in > SEND_NOW.total_seconds():
        return SlotDecision(SlotVerdict.WAIT, wait=reserved_in)
    else:
        ahead = reserved_in
    if not on_time_only(limits, send_threads):
        return SlotDecision(SlotVerdict.SEND)
    return SlotDecision(SlotVerdict.SEND, send_by=clock.mono + ahead + tolerance)


def late_use(limits: Sequence[Limit], clock: Clock, send_threads: int) -> SlotDecision:
    """The SEND of a late booked slot the limiter allowed (SlotVerdict.CHECK answered yes):
    it must start within SLOT_TOLERANCE."""
    if not on_time_only(limits, send_threads):
        return SlotDecision(SlotVerdict.SEND)
    return SlotDecision(SlotVerdict.SEND, send_by=clock.mono + SLOT_TOLERANCE.total_seconds())


def plan_waves(waits: Mapping[int, float], max_countdown: float) -> dict[int, float | None]:
    """For messages waiting `waits[pk]` seconds for their slots: the seconds until the task that
    sends each runs, or None for a slot beyond `max_countdown` (not booked: it waits in the DB).

    Slots at most WAVE_SPAN apart form one wave, run by one task at the wave's last slot: a
    busy limit costs a task per wave rather than per message, for any number of limits per
    message, and no member starts before its own slot (each is at most WAVE_SPAN late, within
    SLOT_TOLERANCE).
    """
    run_in: dict[int, float | None] = dict.fromkeys(waits)
    span = WAVE_SPAN.total_seconds()
    wave: list[int] = []
    start = -math.inf
    for pk, delay in sorted(waits.items(), key=lambda item: (item[1], item[0])):
        if delay > max_countdown:
            continue
        if delay - start > span + 1e-6:  # float slots exactly WAVE_SPAN apart join
            wave, start = [], delay
        wave.append(pk)
        for member in wave:
            run_in[member] = delay
    return run_in


def task_lateness(due_at: datetime | None, now: datetime) -> float:
    """How late (s) a task due at `due_at` runs at `now`: 0 to LATENESS_COMPENSATION."""
    if due_at is None:
        return 0.0
    late = (now - due_at).total_seconds()
    return min(max(late, 0.0), LATENESS_COMPENSATION.total_seconds())


def compensated(
    run_in: dict[int, float | None], lateness: Mapping[int, float]
) -> dict[int, float | None]:
    """`run_in` with the tasks of sends that gave up a late slot run as much earlier as their
    task was late (never before now), so a worker that keeps running tasks late meets the new
    slot; a task that then runs early waits for its slot (slot_decision)."""
    return {
        pk: None if run is None else max(0.0, run - lateness.get(pk, 0.0))
        for pk, run in run_in.items()
    }
