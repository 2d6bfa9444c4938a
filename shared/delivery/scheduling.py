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

# A task may run this much before its due time (clock skew between hosts) ...
EARLY_TOLERANCE = timedelta(seconds=0.05)
# ... and may use its booked rate-limit slot at most this late before booking a new one.
SLOT_TOLERANCE = timedelta(seconds=0.1)
# A slot booked at most this far ahead is used at once ...
SEND_NOW = timedelta(seconds=0.005)
# ... and deferred messages whose slots are close together run as one wave (one task at the
# wave's first slot), each at most min(WAVE, a quarter of its limit's spacing) early.
WAVE = timedelta(seconds=0.1)


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
    """The shared limits a send must fit: per (org, provider), plus per chat for Telegram."""
    extra = integration.extra if isinstance(integration.extra, dict) else {}
    rate = _configured_rate(extra.get("rate_limit_per_second"), message.provider)
    limits = [Limit(key=f"{message.provider}:org:{message.organization_id}", rate=rate)]
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

    A booked slot is used only on time (at most SLOT_TOLERANCE late): a task or a send that
    runs late books a new one, so late sends cannot burst above the limit together. A slot
    booked at most SEND_NOW ahead is used at once; a later one waits.
    """
    if reserved_in is None:
        if booked_at is None or clock.now - booked_at > SLOT_TOLERANCE:
            return SlotDecision(SlotVerdict.BOOK)
        ahead = (booked_at - clock.now).total_seconds()
    elif reserved_in > SEND_NOW.total_seconds():
        return SlotDecision(SlotVerdict.WAIT, wait=reserved_in)
    else:
        ahead = reserved_in
    if not on_time_only(limits, send_threads):
        return SlotDecision(SlotVerdict.SEND)
    return SlotDecision(
        SlotVerdict.SEND, send_by=clock.mono + ahead + SLOT_TOLERANCE.total_seconds()
    )


def early_allowance(limits: Sequence[Limit]) -> float:
    """How early (s) a deferred send may use its slot, so that it can share a task (a wave).

    A quarter of the limit's spacing, so a send early by this and another late by
    SLOT_TOLERANCE still fit limit + 1 in any second; WAVE once the spacing is shorter than
    WAVE (10/s and up), where the lateness tolerance already allows more. Never early under a
    per-destination limit (Telegram's chat), whose margin to the provider's limit is smaller.
    """
    if len(limits) != 1 or not limits[0].rate or limits[0].rate <= 0:
        return 0.0
    spacing = 1.0 / limits[0].rate
    wave = WAVE.total_seconds()
    return wave if spacing <= wave else spacing / 4


def plan_waves(
    waits: Mapping[int, float], limits: Mapping[int, Sequence[Limit]], max_countdown: float
) -> dict[int, float | None]:
    """For messages waiting `waits[pk]` seconds for their slots: the seconds until the task that
    sends each runs, or None for a slot beyond `max_countdown` (not booked: it waits in the DB).

    Slots close together form one wave, run by one task at the wave's first slot, so a busy
    batch costs a task per wave rather than per message: a message joins a wave that starts at
    most `early_allowance` of its limits before its own slot.
    """
    run_in: dict[int, float | None] = dict.fromkeys(waits)
    wave = -math.inf
    for pk, delay in sorted(waits.items(), key=lambda item: item[1]):
        if delay > max_countdown:
            continue
        if delay - wave > early_allowance(limits[pk]):
            wave = delay
        run_in[pk] = wave
    return run_in
