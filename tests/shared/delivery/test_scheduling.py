"""The slot and wave decision as pure functions: a table of (limits, slots, clock) → decision."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from shared.delivery.scheduling import (
    Clock,
    SlotVerdict,
    early_allowance,
    is_due,
    plan_waves,
    slot_decision,
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
    ("booked slot too old", SLOW, 1, ago(0.2), None, SlotVerdict.BOOK, INF, 0.0),
    ("booked slot late within tolerance", SLOW, 1, ago(0.05), None, SlotVerdict.SEND, 1000.05, 0.0),
    ("booked slot exactly at tolerance", SLOW, 1, ago(0.1), None, SlotVerdict.SEND, 1000.0, 0.0),
    ("booked slot late, fast limit", FAST, 8, ago(0.05), None, SlotVerdict.SEND, INF, 0.0),
    ("booked slot ahead (wave run early)", SLOW, 1, ago(-0.3), None, SlotVerdict.SEND, 1000.4, 0.0),
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
    assert decision.wait == wait


ALLOWANCE_CASES = [
    # (case, limits, seconds early)
    ("20/s: spacing under a wave", [Limit("k", 20)], 0.1),
    ("10/s: spacing of a wave", [Limit("k", 10)], 0.1),
    ("5/s: a quarter of the spacing", [Limit("k", 5)], 0.05),
    ("2/s: a quarter of the spacing", [Limit("k", 2)], 0.125),
    ("no limit", NONE, 0.0),
    ("zero rate", [Limit("k", 0)], 0.0),
    ("a per-destination limit too", TELEGRAM, 0.0),
]


@pytest.mark.parametrize(
    ("limits", "early"), [c[1:] for c in ALLOWANCE_CASES], ids=[c[0] for c in ALLOWANCE_CASES]
)
def test_early_allowance(limits, early):
    assert early_allowance(limits) == pytest.approx(early)


def same(limits, pks):
    return dict.fromkeys(pks, limits)


WAVE_CASES = [
    # (case, waits {pk: s}, limits {pk: limits}, max countdown, run_in {pk: s or None})
    (
        "20/s: slots 50 ms apart run in waves of 0.1 s",
        {1: 0.05, 2: 0.10, 3: 0.15, 4: 0.20, 5: 0.25, 6: 0.30},
        same([Limit("k", 20)], range(1, 7)),
        300,
        {1: 0.05, 2: 0.05, 3: 0.05, 4: 0.20, 5: 0.20, 6: 0.20},
    ),
    (
        "5/s: each slot its own task",
        {1: 0.2, 2: 0.4, 3: 0.6},
        same([Limit("k", 5)], (1, 2, 3)),
        300,
        {1: 0.2, 2: 0.4, 3: 0.6},
    ),
    (
        "2/s: a slot within a quarter spacing joins",
        {1: 0.5, 2: 0.55, 3: 1.0},
        same([Limit("k", 2)], (1, 2, 3)),
        300,
        {1: 0.5, 2: 0.5, 3: 1.0},
    ),
    (
        "telegram: never early",
        {1: 0.05, 2: 0.06, 3: 0.06},
        same(TELEGRAM, (1, 2, 3)),
        300,
        {1: 0.05, 2: 0.06, 3: 0.06},
    ),
    (
        "beyond the countdown: not booked",
        {1: 0.1, 2: 400.0, 3: 0.15},
        same([Limit("k", 20)], (1, 2, 3)),
        300,
        {1: 0.1, 2: None, 3: 0.1},
    ),
    (
        "unordered input, keyed by id",
        {7: 0.30, 3: 0.05, 5: 0.10},
        same([Limit("k", 20)], (3, 5, 7)),
        300,
        {7: 0.30, 3: 0.05, 5: 0.05},
    ),
    ("nothing waits", {}, {}, 300, {}),
]


@pytest.mark.parametrize(
    ("waits", "limits", "max_countdown", "run_in"),
    [c[1:] for c in WAVE_CASES],
    ids=[c[0] for c in WAVE_CASES],
)
def test_plan_waves(waits, limits, max_countdown, run_in):
    assert plan_waves(waits, limits, max_countdown) == run_in


@pytest.mark.parametrize(
    ("next_attempt_at", "due"),
    [(None, True), (ago(1), True), (ago(-0.05), True), (ago(-0.06), False)],
    ids=["no due time", "past", "within the early tolerance", "later"],
)
def test_is_due(next_attempt_at, due):
    assert is_due(next_attempt_at, NOW) is due
