"""The slot and wave decision under load, on a virtual clock.

A table of scenarios (many orgs x providers x chats, limits from 0.5 to 10,000/s, tasks and send
threads running late) drives the real pure functions (`slot_decision`, `plan_waves`,
`window_burst`) and the start gate's rule (a send without a fresh slot books one as it starts,
giving a stale one back where nothing was booked after it, and goes only if that slot is now)
against a Python mirror of the limiter's GCRA script. Each
provider account is modelled as the sandbox models it: a token bucket holding one second of
its rate (one token for a chat).

What must hold: when limits don't bind, nothing is deferred and every batch runs as one task;
when they bind, no send is refused by the provider (0 self-inflicted 429s), the achieved rate
is within 5 % of the limit, and deferred messages run in waves, not one task per message.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from shared.delivery.scheduling import (
    SEND_NOW,
    SLOT_TOLERANCE,
    Clock,
    SlotVerdict,
    plan_waves,
    slot_decision,
    window_burst,
)
from shared.ratelimit import Limit

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
MAX_COUNTDOWN = 300.0
BATCH = 25
GATE = 0.002  # one start-gate round (a Redis booking and the UPDATE recording the starts)

Delay = Callable[[random.Random], float]


class Gcra:
    """shared/ratelimit.py's Lua script in `reserve` mode, on a virtual clock (seconds)."""

    def __init__(self) -> None:
        self.tat: dict[str, float] = {}

    def reserve(self, limits: list[Limit], now: float, booked: float | None = None) -> float:
        """`reserve`, or `rebook` when `booked` (the event's stale earlier slot) is given."""
        slot, tats = now, {}
        for lim in limits:
            interval = 1.0 / lim.rate
            tat = self.tat.get(lim.key, now)
            if booked is not None and booked < tat <= booked + 1.5 * interval:
                tat -= interval  # the stale slot is still the last booking: given back
            tats[lim.key] = max(tat, now)
            slot = max(slot, tats[lim.key] - (lim.burst - 1) * interval)
        delay = slot - now
        if delay <= MAX_COUNTDOWN:
            for lim in limits:
                self.tat[lim.key] = max(tats[lim.key], slot) + 1.0 / lim.rate
        return delay


class Bucket:
    """A provider account as the sandbox enforces it: refilled at `rate`, holding max(rate, 1)."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, max(rate, 1.0)
        self.tokens, self.last = self.capacity, 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Msg:
    pk: int
    limits: list[Limit]
    provider_rates: dict[str, float]  # key -> the provider's own rate for that account/chat
    booked: float | None = None


@dataclass
class Result:
    sent: dict[int, float] = field(default_factory=dict)
    deferrals: int = 0
    booked_at_gate: int = 0
    tasks: int = 0
    refused: int = 0


def at(seconds: float) -> Clock:
    return Clock(now=EPOCH + timedelta(seconds=seconds), mono=seconds)


def run(messages: list[Msg], arrivals: list[float], task_late: Delay, thread_wait: Delay) -> Result:
    """Deliver `messages` in batches of BATCH arriving at `arrivals`. Every deferred wave task
    runs `task_late` after its due time; every send reaches the start gate `thread_wait` after
    its task ran (the wait for a free send thread)."""
    gcra, result, rng = Gcra(), Result(), random.Random(7)
    tolerance = SLOT_TOLERANCE.total_seconds()
    buckets: dict[str, Bucket] = {}
    events: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(when: float, kind: str, payload: object) -> None:
        nonlocal seq
        heapq.heappush(events, (when, seq, kind, payload))
        seq += 1

    def defer(waits: dict[int, float], now: float, by_pk: dict[int, Msg]) -> None:
        result.deferrals += len(waits)
        waves: dict[float, list[Msg]] = {}
        for pk, run_in in plan_waves(waits, MAX_COUNTDOWN).items():
            assert run_in is not None
            by_pk[pk].booked = now + waits[pk]
            waves.setdefault(run_in, []).append(by_pk[pk])
        for run_in, members in waves.items():
            push(now + run_in + task_late(rng), "task", members)

    for index, start in enumerate(arrivals):
        push(start, "task", messages[index * BATCH : (index + 1) * BATCH])
    while events:
        now, _, kind, payload = heapq.heappop(events)
        clock = at(now)
        if kind == "start":  # the start gate: every start waiting within GATE, as one group
            group = [payload]
            while events and events[0][2] == "start" and events[0][0] <= now + GATE:
                group.append(heapq.heappop(events)[3])
            now += GATE  # the gate's round trips
            gate_waits: dict[int, float] = {}
            for m, send_by in group:
                if now > send_by:
                    result.booked_at_gate += 1
                    stale = None if send_by == -math.inf else send_by - tolerance
                    delay = gcra.reserve(m.limits, now, booked=stale)
                    if delay > SEND_NOW.total_seconds():
                        gate_waits[m.pk] = delay
                        continue
                assert m.pk not in result.sent, f"message {m.pk} sent twice"
                result.sent[m.pk] = now
                for key, rate in m.provider_rates.items():
                    bucket = buckets.setdefault(key, Bucket(rate))
                    result.refused += not bucket.take(now)
            if gate_waits:
                defer(gate_waits, now, {m.pk: m for m, _ in group})
            continue
        result.tasks += 1
        waits: dict[int, float] = {}
        for m in payload:
            booked_at = None if m.booked is None else EPOCH + timedelta(seconds=m.booked)
            decision = slot_decision(m.limits, clock, booked_at=booked_at)
            if decision.verdict is SlotVerdict.WAIT:
                waits[m.pk] = decision.wait
                continue
            send_by = decision.send_by
            if decision.verdict is SlotVerdict.BOOK:  # booked at the start gate
                send_by = -math.inf if m.booked is None else m.booked + tolerance
            push(now + thread_wait(rng), "start", (m, send_by))
        if waits:
            defer(waits, now, {m.pk: m for m in payload})
    return result


def provider_rate(ours: float) -> float:
    """The provider's limit behind ours: the same from 2/s (the sandbox holds a second of it),
    and r / (1 - 0.1 r) below, the margin a slow limit keeps for 0.1 s of lateness (the README's
    "Delivery"; Telegram's chats: 0.9/s ours, 1/s the provider's)."""
    return ours if ours >= 2 else ours / (1 - 0.1 * ours)


def workload(
    count: int, orgs: int, providers: dict[str, float], chats: int | None, chat_rate: float = 0.9
) -> list[Msg]:
    """`count` messages spread over `orgs` x `providers` (name -> limit/s); Telegram messages
    also carry a chat limit (0.9/s ours, 1/s the provider's), over `chats` distinct chats
    (None: one chat per message)."""
    out = []
    names = list(providers)
    for pk in range(count):
        org, provider = pk % orgs, names[(pk // orgs) % len(names)]
        rate = providers[provider]
        key = f"{provider}:org:{org}"
        limits = [Limit(key, rate, window_burst(rate))]
        provider_rates = {key: provider_rate(rate)}
        if provider == "telegram":
            chat = f"telegram:chat:{org}:{pk if chats is None else pk % chats}"
            limits.append(Limit(chat, chat_rate))
            provider_rates[chat] = 1.0
        out.append(Msg(pk, limits, provider_rates))
    return out


def steady(count: int, per_second: float) -> list[float]:
    """Arrival times of count/BATCH batches at `per_second` messages a second."""
    return [i * BATCH / per_second for i in range(math.ceil(count / BATCH))]


def at_once(count: int) -> list[float]:
    return [0.0] * math.ceil(count / BATCH)


def never(rng: random.Random) -> float:
    return 0.0


def late(seconds: float) -> Delay:
    return lambda rng: seconds


def jitter(rng: random.Random) -> float:
    """A busy worker: most tasks on time, some up to 0.4 s late."""
    return rng.choice((0.0, 0.0, 0.01, 0.03, 0.08, 0.2, 0.4))


def busy_threads(rng: random.Random) -> float:
    """Send threads all busy: a send waits up to 0.5 s for one (beyond SLOT_TOLERANCE)."""
    return rng.uniform(0.0, 0.5)


def free_threads(rng: random.Random) -> float:
    """A free send thread picks the send up within a few ms."""
    return rng.uniform(0.0, 0.004)


MIXED = {"whatsapp": 1000.0, "sendgrid": 1000.0, "telegram": 1000.0, "instagram": 1000.0}

FREE = "free"  # limits don't bind: nothing may be deferred
SAFE = "safe"  # binding with tasks late past SLOT_TOLERANCE: no 429 (their slots are re-booked,
# behind the slots booked since, so the rate may dip; it never rises above the limit)
# (case, messages, arrivals, task lateness, send-thread wait, FREE | SAFE | binding rate)
SCENARIOS = [
    (
        "mixed 4 providers x 2 orgs at 1000/s, 300 msg/s, busy send threads",
        lambda: workload(3000, 2, MIXED, None),
        steady(3000, 300),
        never,
        busy_threads,
        FREE,
    ),
    (
        "telegram only, a chat per message, 1000/s, 300 msg/s, busy send threads",
        lambda: workload(3000, 1, {"telegram": 1000.0}, None),
        steady(3000, 300),
        never,
        busy_threads,
        FREE,
    ),
    (
        "one org, one provider at 1000/s, 900 msg/s",
        lambda: workload(3000, 1, {"sendgrid": 1000.0}, None),
        steady(3000, 900),
        jitter,
        free_threads,
        FREE,
    ),
    (
        "10,000/s, 5,000 msg/s",
        lambda: workload(5000, 1, {"whatsapp": 10_000.0}, None),
        steady(5000, 5000),
        never,
        free_threads,
        FREE,
    ),
    (
        "250/s: a batch of 25 fits the window, 200 msg/s",
        lambda: workload(2000, 1, {"instagram": 250.0}, None),
        steady(2000, 200),
        never,
        free_threads,
        FREE,
    ),
    (
        "binding: 50/s, all at once",
        lambda: workload(1000, 1, {"whatsapp": 50.0}, None),
        at_once(1000),
        never,
        free_threads,
        50.0,
    ),
    (
        "binding: 50/s, waves 20 ms late",
        lambda: workload(1000, 1, {"whatsapp": 50.0}, None),
        at_once(1000),
        late(0.02),
        free_threads,
        50.0,
    ),
    (
        "binding: 1000/s, 5000 at once, jittery tasks and busy threads",
        lambda: workload(5000, 1, {"sendgrid": 1000.0}, None),
        at_once(5000),
        jitter,
        busy_threads,
        SAFE,
    ),
    (
        "binding: 1000/s, 5000 at once",
        lambda: workload(5000, 1, {"sendgrid": 1000.0}, None),
        at_once(5000),
        never,
        free_threads,
        1000.0,
    ),
    (
        "binding: 10,000/s, 10,000 at once",
        lambda: workload(10_000, 1, {"sendgrid": 10_000.0}, None),
        at_once(10_000),
        late(0.01),
        free_threads,
        10_000.0,
    ),
    (
        "binding: 5/s",
        lambda: workload(100, 1, {"instagram": 5.0}, None),
        at_once(100),
        late(0.02),
        free_threads,
        5.0,
    ),
    (
        "binding: 5/s, jittery tasks",
        lambda: workload(100, 1, {"instagram": 5.0}, None),
        at_once(100),
        jitter,
        free_threads,
        SAFE,
    ),
    (
        "binding: 0.5/s",
        lambda: workload(25, 1, {"whatsapp": 0.5}, None),
        [0.0],
        late(0.05),
        free_threads,
        0.5,
    ),
    (
        "binding: telegram bot 30/s, a chat per message",
        lambda: workload(600, 1, {"telegram": 30.0}, None),
        at_once(600),
        late(0.02),
        free_threads,
        30.0,
    ),
    (
        "binding: telegram, 3 chats at 0.9/s, jittery tasks and busy threads",
        lambda: workload(75, 1, {"telegram": 30.0}, 3),
        at_once(75),
        jitter,
        busy_threads,
        SAFE,
    ),
    (
        "many orgs x providers x chats, limits 0.5 to 80/s, jittery tasks and busy threads",
        lambda: workload(
            4000, 40, {"whatsapp": 80.0, "sendgrid": 5.0, "telegram": 30.0, "instagram": 0.5}, 500
        ),
        steady(4000, 400),
        jitter,
        busy_threads,
        SAFE,
    ),
]


@pytest.mark.parametrize(
    ("messages", "arrivals", "task_late", "thread_wait", "binding"),
    [c[1:] for c in SCENARIOS],
    ids=[c[0] for c in SCENARIOS],
)
def test_the_limiter_under_load(messages, arrivals, task_late, thread_wait, binding):
    messages = messages()
    result = run(messages, arrivals, task_late, thread_wait)

    assert len(result.sent) == len(messages)  # every message sent, once (asserted in run)
    assert result.refused == 0  # no send refused by the provider's own limit
    times = sorted(result.sent.values())
    if binding not in (FREE, SAFE):  # the rate between the 20th and 90th percentile sends
        low, high = times[len(times) * 2 // 10], times[len(times) * 9 // 10]
        achieved = (len(times) * 9 // 10 - len(times) * 2 // 10) / (high - low)
        assert achieved == pytest.approx(binding, rel=0.05)
        if binding >= 40:  # slots under WAVE apart: waves, not a task per message
            assert result.tasks <= len(arrivals) + result.deferrals / 2


NON_BINDING = [c[0] for c in SCENARIOS if c[5] == FREE]


@pytest.mark.parametrize(
    ("messages", "arrivals", "task_late", "thread_wait"),
    [c[1:5] for c in SCENARIOS if c[0] in NON_BINDING],
    ids=NON_BINDING,
)
def test_limits_that_do_not_bind_defer_nothing(messages, arrivals, task_late, thread_wait):
    messages = messages()
    result = run(messages, arrivals, task_late, thread_wait)

    assert result.deferrals == 0
    assert result.tasks == len(arrivals)
    assert result.booked_at_gate >= len(messages)  # every slot booked as its send started
