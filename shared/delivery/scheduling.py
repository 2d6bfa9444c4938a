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
from shared.ratelimit import MAX_RATE, Limit

# A task may run this much before its due time (clock skew between hosts) ...
EARLY_TOLERANCE = timedelta(seconds=0.05)
# ... and a send may start at most this long after its booked rate-limit slot: a later start
# takes a fresh slot first (at the start gate), so late sends never bunch above the limit.
SLOT_TOLERANCE = timedelta(seconds=0.1)
# A slot at most this far ahead counts as now (the round trip to Redis is not a wait).
SEND_NOW = timedelta(seconds=0.005)
# An account limit's burst: the slots of this window of its rate count as now, so a batch whose
# slots all fit the window goes out at once. Each limit is still exact over any longer period:
# GCRA allows at most rate x (T + WINDOW) sends in any T seconds.
WINDOW = timedelta(seconds=0.1)
# Deferred messages whose slots lie within WAVE of each other run as one task (a wave), due at
# the wave's last slot, so no send is ever early and none is more than WAVE late: the rest of
# SLOT_TOLERANCE is left for the task's own start.
WAVE = timedelta(seconds=0.075)


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
    """BOOK: no usable slot yet, ask the limiter; SEND: the slot is now; WAIT: it is later."""

    BOOK = "book"
    SEND = "send"
    WAIT = "wait"


@dataclass(frozen=True)
class SlotDecision:
    """The verdict, with the monotonic time after which a SEND must not start (inf: no bound)
    and the seconds a WAIT waits."""

    verdict: SlotVerdict
    send_by: float = math.inf
    wait: float = 0.0


def message_limits(message: Message, integration: Integration) -> list[Limit]:
    """The shared limits a send must fit: per (org, provider) with a burst of WINDOW's worth of
    its rate, plus per chat for Telegram (no burst: a chat's limit is the provider's own)."""
    extra = integration.extra if isinstance(integration.extra, dict) else {}
    rate = _configured_rate(extra.get("rate_limit_per_second"), message.provider)
    limits = [
        Limit(
            key=f"{message.provider}:org:{message.organization_id}",
            rate=rate,
            burst=window_burst(rate),
        )
    ]
    if message.provider == Provider.TELEGRAM:
        chat = hashlib.sha256(message.to.encode()).hexdigest()[:16]
        chat_rate = (
            settings.TELEGRAM_GROUP_RATE
            if message.to.startswith("-")
            else settings.TELEGRAM_CHAT_RATE
        )
        limits.append(Limit(key=f"telegram:chat:{integration.pk}:{chat}", rate=chat_rate))
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


def window_burst(rate: float | None) -> int:
    """How many sends of a limit of `rate`/s may start at once: WINDOW's worth, at least one."""
    if rate is None or not rate > 0 or not math.isfinite(rate):
        return 1
    return max(1, math.floor(min(rate, MAX_RATE) * WINDOW.total_seconds() + 1e-9))


def slot_decision(
    limits: Sequence[Limit],
    clock: Clock,
    *,
    booked_at: datetime | None = None,
    reserved_in: float | None = None,
) -> SlotDecision:
    """Whether a send under `limits` goes now, given the slot booked on its row (`booked_at`)
    or, once asked, the seconds until the slot the limiter just booked (`reserved_in`). BOOK:
    the send books its slot when it starts (at the start gate), not before.

    A slot at most SEND_NOW ahead is used at once (a limit's burst makes WINDOW's worth of
    slots "now"); a later one waits. A booked slot is used at most SLOT_TOLERANCE late: past
    that the row books again. `send_by` bounds when the send may start; a send still waiting
    for a send thread by then takes a fresh slot at the start gate instead.
    """
    if not any(lim.rate is not None and lim.rate > 0 for lim in limits):
        return SlotDecision(SlotVerdict.SEND)  # no limit: nothing to book, no bound
    if reserved_in is None:
        if booked_at is None or clock.now - booked_at > SLOT_TOLERANCE:
            return SlotDecision(SlotVerdict.BOOK)
        ahead = (booked_at - clock.now).total_seconds()
    else:
        ahead = reserved_in
    if ahead > SEND_NOW.total_seconds():
        return SlotDecision(SlotVerdict.WAIT, wait=ahead)
    return SlotDecision(
        SlotVerdict.SEND, send_by=clock.mono + ahead + SLOT_TOLERANCE.total_seconds()
    )


def plan_waves(waits: Mapping[int, float], max_countdown: float) -> dict[int, float | None]:
    """For messages waiting `waits[pk]` seconds for their slots: the seconds until the task that
    sends each runs, or None for a slot beyond `max_countdown` (not booked: it waits in the DB).

    Slots within WAVE of the first of a wave form that wave, run by one task at its last slot,
    so a busy limit costs a task per wave rather than per message, for any number of limits per
    message: no send starts before its slot, and none more than WAVE after it.
    """
    run_in: dict[int, float | None] = dict.fromkeys(waits)
    order = sorted((delay, pk) for pk, delay in waits.items() if delay <= max_countdown)
    wave = WAVE.total_seconds()
    first = 0
    while first < len(order):
        last = first
        while last + 1 < len(order) and order[last + 1][0] - order[first][0] <= wave + 1e-9:
            last += 1
        for _, pk in order[first : last + 1]:
            run_in[pk] = order[last][0]
        first = last + 1
    return run_in
