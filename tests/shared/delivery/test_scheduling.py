"""The slot and wave decision as pure functions: a table of (limits, slots, clock) → decision."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from shared.delivery.scheduling import (
    Clock,
    SlotVerdict,
    compensated,
    is_due,
    late_tolerance,
    plan_waves,
    slot_decision,
    task_lateness,
    window_burst,
)
from shared.ratelimit import Limit

NOW = datetime(2030, 1, 1, tzinfo=UTC)
CLOCK = Clock(now=NOW, mono=1000.0)
SLOW = [Limit("whatsapp:org:1", 0.5)]  # below one send a second per send thread: on time only
FAST = [Limit("whatsapp:org:1", 1000)]
NONE = [Limit("whatsapp:org:1", None)]
TELEGRAM = [Limit("telegram:org:1", 20), Limit("telegram:chat:1:ab", 0.9)]
INF = math.inf


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


SLOT_CASES = [
    # (case, limits, send threads, booked_at, reserved_in, verdict, send_by, wait)
    ("no slot booked yet", SLOW, 1, None, None, SlotVerdict.BOOK, INF, 0.0),
    ("booked slot too late for a slow limit", SLOW, 1, ago(0.2), None, SlotVerdict.CHECK, INF, 0.0),
    ("booked slot late within tolerance", SLOW, 1, ago(0.05), None, SlotVerdict.SEND, 1000.05, 0.0),
    ("booked slot exactly at tolerance", SLOW, 1, ago(0.1), None, SlotVerdict.SEND, 1000.0, 0.0),
    ("booked slot late, fast limit", FAST, 8, ago(0.05), None, SlotVerdict.SEND, INF, 0.0),
    ("fast limit takes 0.4 s late", FAST, 8, ago(0.4), None, SlotVerdict.SEND, INF, 0.0),
    ("fast limit, 0.6 s late", FAST, 8, ago(0.6), None, SlotVerdict.CHECK, INF, 0.0),
    ("booked slot ahead (task run early)", SLOW, 1, ago(-0.3), None, SlotVerdict.WAIT, INF, 0.3),
    ("ahead within SEND_NOW", SLOW, 1, ago(-0.004), None, SlotVerdict.SEND, 1000.104, 0.0),
    ("reserved now, slow limit", SLOW, 1, None, 0.0, SlotVerdict.SEND, 1000.1, 0.0),
    ("reserved now, fast limit", FAST, 8, None, 0.0, SlotVerdict.SEND, INF, 0.0),
    ("reserved within SEND_NOW", SLOW, 1, None, 0.005, SlotVerdict.SEND, 1000.105, 0.0),
    ("reserved just past SEND_NOW", SLOW, 1, None, 0.006, SlotVerdict.WAIT, INF, 0.006),
    ("reserved later", FAST, 8, None, 2.0, SlotVerdict.WAIT, INF, 2.0),
    ("reserved now, no limit", NONE, 8, None, 0.0, SlotVerdict.SEND, INF, 0.0),
    ("telegram, org limit above threads", TELEGRAM, 4, None, 0.0, SlotVerdict.SEND, INF, 0.0),
    ("telegram, org limit below threads", TELEGRAM, 32, None, 0.0, SlotVerdict.SEND, 1000.1, 0.0),
    (
        "a fresh reservation wins over a stale booking",
        SLOW,
        1,
        ago(5),
        0.0,
        SlotVerdict.SEND,
        1000.1,
        0.0,
    ),
]


@pytest.mark.parametrize(
    ("limits", "threads", "booked_at", "reserved_in", "verdict", "send_by", "wait"),
    [case[1:] for case in SLOT_CASES],
    ids=[case[0] for case in SLOT_CASES],
)
def test_slot_decision(limits, threads, booked_at, reserved_in, verdict, send_by, wait):
    decision = slot_decision(limits, CLOCK, threads, booked_at=booked_at, reserved_in=reserved_in)

    assert decision.verdict is verdict
    assert decision.send_by == pytest.approx(send_by)
    assert decision.wait == pytest.approx(wait)


@pytest.mark.parametrize(
    ("limits", "late", "checked"),
    [
        (SLOW, 0.2, SLOW),
        (FAST, 0.6, FAST),
        (TELEGRAM, 0.3, TELEGRAM[1:]),  # the bot limit takes 0.3 s by itself; the chat does not
        (TELEGRAM, 0.7, TELEGRAM),
    ],
    ids=["slow", "fast beyond 0.5 s", "telegram: only the chat", "telegram: both"],
)
def test_a_late_slot_checks_the_limits_that_cannot_take_the_lateness(limits, late, checked):
    decision = slot_decision(limits, CLOCK, 32, booked_at=ago(late))

    assert decision.verdict is SlotVerdict.CHECK
    assert decision.check == tuple(checked)
    assert decision.late == pytest.approx(late)


def test_late_tolerance_is_the_strictest_limits():
    assert late_tolerance(FAST) == 0.5
    assert late_tolerance(SLOW) == late_tolerance(TELEGRAM) == 0.1
    assert late_tolerance(NONE) == 0.5


def test_a_task_late_again_is_compensated_up_to_a_second():
    due = NOW - timedelta(seconds=0.3)

    assert task_lateness(due, NOW) == pytest.approx(0.3)
    assert task_lateness(NOW + timedelta(seconds=1), NOW) == 0.0
    assert task_lateness(NOW - timedelta(seconds=9), NOW) == 1.0
    assert compensated({1: 2.0, 2: 0.1, 3: None}, {1: 0.3, 2: 0.3}) == {1: 1.7, 2: 0.0, 3: None}


BURST_CASES = [
    # (case, rate per second, burst: the sends that fit in the 0.1 s window, at least 1)
    ("Telegram chat, 0.9/s", 0.9, 1),
    ("0.5/s", 0.5, 1),
    ("5/s", 5, 1),
    ("9.99/s", 9.99, 1),
    ("10/s", 10, 1),
    ("20/s", 20, 2),
    ("80/s", 80, 8),
    ("1000/s", 1000, 100),
    ("10000/s", 10_000, 1000),
    ("no limit", None, 1),
    ("zero", 0, 1),
]


@pytest.mark.parametrize(
    ("rate", "burst"), [c[1:] for c in BURST_CASES], ids=[c[0] for c in BURST_CASES]
)
def test_window_burst(rate, burst):
    assert window_burst(rate) == burst


WAVE_CASES = [
    # (case, waits {pk: s}, max countdown, run_in {pk: s or None})
    (
        "20/s: slots 50 ms apart, waves of slots at most 50 ms apart, at the last slot",
        {1: 0.05, 2: 0.10, 3: 0.15, 4: 0.20, 5: 0.25, 6: 0.30},
        300,
        {1: 0.10, 2: 0.10, 3: 0.20, 4: 0.20, 5: 0.30, 6: 0.30},
    ),
    (
        "1000/s: 25 slots 1 ms apart are one wave",
        {pk: 0.2 + pk / 1000 for pk in range(25)},
        300,
        dict.fromkeys(range(25), 0.224),
    ),
    (
        "5/s: each slot its own task",
        {1: 0.2, 2: 0.4, 3: 0.6},
        300,
        {1: 0.2, 2: 0.4, 3: 0.6},
    ),
    (
        "telegram chats behind one bot limit: a wave too (several limits per message)",
        {1: 0.05, 2: 0.06, 3: 0.06},
        300,
        {1: 0.06, 2: 0.06, 3: 0.06},
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

    assert planned == pytest.approx(run_in)
    for pk, run in planned.items():  # never before its slot, at most WAVE_SPAN after it
        assert run is None or 0 <= run - waits[pk] <= 0.05 + 1e-9


@pytest.mark.parametrize(
    ("next_attempt_at", "due"),
    [(None, True), (ago(1), True), (ago(-0.05), True), (ago(-0.06), False)],
    ids=["no due time", "past", "within the early tolerance", "later"],
)
def test_is_due(next_attempt_at, due):
    assert is_due(next_attempt_at, NOW) is due
