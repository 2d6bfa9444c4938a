"""The slot and wave decision as pure functions: a table of (limits, slots, clock) → decision."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from shared.delivery.scheduling import (
    WAVE,
    Clock,
    SlotVerdict,
    is_due,
    plan_waves,
    slot_decision,
    window_burst,
)
from shared.ratelimit import Limit

NOW = datetime(2030, 1, 1, tzinfo=UTC)
CLOCK = Clock(now=NOW, mono=1000.0)
SLOW = [Limit("whatsapp:org:1", 0.5)]
FAST = [Limit("whatsapp:org:1", 1000, burst=100)]
NONE = [Limit("whatsapp:org:1", None)]
TELEGRAM = [Limit("telegram:org:1", 20, burst=2), Limit("telegram:chat:1:ab", 0.9)]
INF = math.inf


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


SLOT_CASES = [
    # (case, limits, booked_at, reserved_in, verdict, send_by, wait)
    ("no slot booked yet: booked as the send starts", SLOW, None, None, SlotVerdict.BOOK, INF, 0.0),
    ("no limit: nothing to book", NONE, None, None, SlotVerdict.SEND, INF, 0.0),
    ("booked slot too old (a task 0.2 s late)", SLOW, ago(0.2), None, SlotVerdict.BOOK, INF, 0.0),
    ("booked slot late within tolerance", SLOW, ago(0.05), None, SlotVerdict.SEND, 1000.05, 0.0),
    ("booked slot exactly at tolerance", SLOW, ago(0.1), None, SlotVerdict.SEND, 1000.0, 0.0),
    ("booked slot late, fast limit", FAST, ago(0.05), None, SlotVerdict.SEND, 1000.05, 0.0),
    ("booked slot late, telegram", TELEGRAM, ago(0.07), None, SlotVerdict.SEND, 1000.03, 0.0),
    ("booked slot now", FAST, NOW, None, SlotVerdict.SEND, 1000.1, 0.0),
    ("task run early: waits for its slot", SLOW, ago(-0.03), None, SlotVerdict.WAIT, INF, 0.03),
    ("task run early within SEND_NOW", SLOW, ago(-0.004), None, SlotVerdict.SEND, 1000.104, 0.0),
    ("reserved now, slow limit", SLOW, None, 0.0, SlotVerdict.SEND, 1000.1, 0.0),
    ("reserved now, fast limit", FAST, None, 0.0, SlotVerdict.SEND, 1000.1, 0.0),
    ("reserved within SEND_NOW", SLOW, None, 0.005, SlotVerdict.SEND, 1000.105, 0.0),
    ("reserved just past SEND_NOW", SLOW, None, 0.006, SlotVerdict.WAIT, INF, 0.006),
    ("reserved later", FAST, None, 2.0, SlotVerdict.WAIT, INF, 2.0),
    ("reserved now, no limit: no bound", NONE, None, 0.0, SlotVerdict.SEND, INF, 0.0),
    ("telegram bot + chat, now", TELEGRAM, None, 0.0, SlotVerdict.SEND, 1000.1, 0.0),
    ("telegram, the chat's next slot", TELEGRAM, None, 1.11, SlotVerdict.WAIT, INF, 1.11),
    (
        "a fresh reservation wins over a stale booking",
        SLOW,
        ago(5),
        0.0,
        SlotVerdict.SEND,
        1000.1,
        0.0,
    ),
]


@pytest.mark.parametrize(
    ("limits", "booked_at", "reserved_in", "verdict", "send_by", "wait"),
    [case[1:] for case in SLOT_CASES],
    ids=[case[0] for case in SLOT_CASES],
)
def test_slot_decision(limits, booked_at, reserved_in, verdict, send_by, wait):
    decision = slot_decision(limits, CLOCK, booked_at=booked_at, reserved_in=reserved_in)

    assert decision.verdict is verdict
    assert decision.send_by == pytest.approx(send_by)
    assert decision.wait == pytest.approx(wait)


BURST_CASES = [
    # (rate per second, sends that may start at once: 0.1 s of the rate, at least one)
    (0.5, 1),
    (5, 1),
    (9.99, 1),
    (10, 1),
    (20, 2),
    (30, 3),
    (250, 25),
    (1000, 100),
    (10_000, 1000),
    (10_000_000, 100_000),  # the limiter's clamp (1,000,000/s) bounds the burst too
    (None, 1),
    (0, 1),
    (-3, 1),
    (math.nan, 1),
    (math.inf, 1),
]


@pytest.mark.parametrize(("rate", "burst"), BURST_CASES, ids=[str(c[0]) for c in BURST_CASES])
def test_window_burst(rate, burst):
    assert window_burst(rate) == burst


WAVE_CASES = [
    # (case, waits {pk: s}, max countdown, run_in {pk: s or None}): a wave spans WAVE (75 ms)
    # from its first slot and runs at its last, so no send is early and none is 75 ms late.
    (
        "20/s: slots 50 ms apart, two a wave",
        {1: 0.05, 2: 0.10, 3: 0.15, 4: 0.20, 5: 0.25, 6: 0.30},
        300,
        {1: 0.10, 2: 0.10, 3: 0.20, 4: 0.20, 5: 0.30, 6: 0.30},
    ),
    (
        "1000/s: 25 slots 1 ms apart, one wave",
        {pk: pk / 1000 for pk in range(1, 26)},
        300,
        dict.fromkeys(range(1, 26), 0.025),
    ),
    (
        "100/s: 30 slots 10 ms apart, waves of 8",
        {pk: pk / 100 for pk in range(1, 31)},
        300,
        {pk: min(((pk - 1) // 8 + 1) * 8, 30) / 100 for pk in range(1, 31)},
    ),
    (
        "5/s: each slot its own task",
        {1: 0.2, 2: 0.4, 3: 0.6},
        300,
        {1: 0.2, 2: 0.4, 3: 0.6},
    ),
    (
        "telegram chats (bot + chat limits): slots close together share a task",
        {1: 0.05, 2: 0.06, 3: 0.06, 4: 1.16},
        300,
        {1: 0.06, 2: 0.06, 3: 0.06, 4: 1.16},
    ),
    (
        "beyond the countdown: not booked",
        {1: 0.1, 2: 400.0, 3: 0.15},
        300,
        {1: 0.15, 2: None, 3: 0.15},
    ),
    (
        "unordered input, keyed by id",
        {7: 0.30, 3: 0.05, 5: 0.10},
        300,
        {7: 0.30, 3: 0.10, 5: 0.10},
    ),
    ("nothing waits", {}, 300, {}),
]


@pytest.mark.parametrize(
    ("waits", "max_countdown", "run_in"),
    [c[1:] for c in WAVE_CASES],
    ids=[c[0] for c in WAVE_CASES],
)
def test_plan_waves(waits, max_countdown, run_in):
    planned = plan_waves(waits, max_countdown)

    assert planned.keys() == run_in.keys()
    for pk, expected in run_in.items():
        assert planned[pk] == (None if expected is None else pytest.approx(expected)), pk
    for pk, run in planned.items():  # never before a slot, never more than WAVE after it
        if run is not None:
            assert 0 <= run - waits[pk] <= WAVE.total_seconds() + 1e-9


@pytest.mark.parametrize(
    ("next_attempt_at", "due"),
    [(None, True), (ago(1), True), (ago(-0.05), True), (ago(-0.06), False)],
    ids=["no due time", "past", "within the early tolerance", "later"],
)
def test_is_due(next_attempt_at, due):
    assert is_due(next_attempt_at, NOW) is due
