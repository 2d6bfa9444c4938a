"""The shared rate limiter against the real Redis: deferral, booking, several keys, atomicity, rate."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest

from shared.ratelimit import Limit, RateLimiter


@pytest.fixture
def prefix(redis15):
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    yield prefix
    for key in redis15.scan_iter(match=prefix + "*"):
        redis15.delete(key)


@pytest.fixture
def limiter(redis15, prefix):
    return RateLimiter(redis15, prefix=prefix)


def test_five_per_second_grants_one_and_defers_the_next_by_a_fifth_of_a_second(limiter):
    limit = Limit("telegram:chat:1", rate=5.0)

    assert limiter.acquire([limit]) == 0.0
    assert limiter.acquire([limit]) == pytest.approx(0.2, abs=0.02)


def test_waiting_the_returned_delay_is_enough(limiter):
    limit = Limit("telegram:chat:1", rate=10.0)
    assert limiter.acquire([limit]) == 0.0

    wait = limiter.acquire([limit])
    assert 0 < wait <= 0.1
    time.sleep(wait + 0.005)  # real time must pass; bounded to ~0.1 s

    assert limiter.acquire([limit]) == 0.0


def test_burst_allows_that_many_at_once(limiter):
    limit = Limit("whatsapp:sender:ab12", rate=1.0, burst=3)

    assert [limiter.acquire([limit]) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire([limit]) == pytest.approx(1.0, abs=0.02)


def test_reserve_spaces_ten_callers_half_a_second_apart(limiter):
    limit = Limit("sendgrid:org:7", rate=2.0)

    delays = [limiter.reserve([limit]) for _ in range(10)]

    assert delays == pytest.approx([0.5 * i for i in range(10)], abs=0.02)


def test_the_tighter_of_several_keys_wins(limiter):
    per_org = Limit("telegram:org:12", rate=30.0)
    per_chat = Limit("telegram:chat:12:4242", rate=1.0)

    assert limiter.acquire([per_org, per_chat]) == 0.0
    assert limiter.acquire([per_org, per_chat]) == pytest.approx(1.0, abs=0.02)
    assert [limiter.reserve([per_org, per_chat]) for _ in range(2)] == pytest.approx(
        [1.0, 2.0], abs=0.02
    )


def test_a_refused_acquire_consumes_nothing(limiter):
    tight = Limit("telegram:chat:12:4242", rate=1.0)
    loose = Limit("telegram:org:12", rate=1.0, burst=2)
    assert limiter.acquire([tight, loose]) == 0.0  # loose: one token of two left

    assert limiter.acquire([tight, loose]) > 0.5  # refused by tight

    assert limiter.acquire([loose]) == 0.0  # the refusal left loose's last token in place
    assert limiter.acquire([loose]) > 0.5


def test_a_reserve_over_max_wait_books_nothing(limiter):
    limit = Limit("instagram:account:3", rate=1.0)
    assert limiter.reserve([limit]) == 0.0

    assert limiter.reserve([limit], max_wait=0.5) == pytest.approx(1.0, abs=0.02)

    assert limiter.reserve([limit]) == pytest.approx(1.0, abs=0.02)
    assert limiter.reserve([limit]) == pytest.approx(2.0, abs=0.02)


def test_no_rate_means_no_limit(limiter, redis15, prefix):
    unlimited = [Limit("a", rate=None), Limit("b", rate=0), Limit("c", rate=-1)]

    assert [limiter.acquire(unlimited) for _ in range(5)] == [0.0] * 5
    assert [limiter.reserve(unlimited) for _ in range(5)] == [0.0] * 5
    assert list(redis15.scan_iter(match=prefix + "*")) == []


def test_unlimited_entries_are_skipped_beside_real_ones(limiter):
    limits = [Limit("a", rate=None), Limit("b", rate=4.0)]

    assert limiter.acquire(limits) == 0.0
    assert limiter.acquire(limits) == pytest.approx(0.25, abs=0.02)


def test_idle_keys_expire_once_the_bucket_is_full_again(limiter, redis15, prefix):
    limit = Limit("google_calendar:user:9", rate=0.5)
    limiter.reserve([limit])
    limiter.reserve([limit])

    ttl_ms = redis15.pttl(prefix + "google_calendar:user:9")
    assert 3_900 <= ttl_ms <= 4_001


def test_a_key_twice_in_one_call_is_refused(limiter):
    with pytest.raises(ValueError, match="once"):
        limiter.acquire([Limit("x", rate=1.0), Limit("x", rate=2.0)])


def test_a_burst_below_one_is_refused(limiter):
    with pytest.raises(ValueError, match="burst"):
        limiter.acquire([Limit("x", rate=1.0, burst=0)])


def test_concurrent_reservations_never_share_a_slot(limiter):
    limit = Limit("telegram:org:1", rate=10.0)
    slots: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def consumer():
        start.wait()
        for _ in range(50):
            before = time.time()
            delay = limiter.reserve([limit])
            after = time.time()
            with lock:
                slots.append((before + after) / 2 + delay)

    threads = [threading.Thread(target=consumer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    slots.sort()
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert len(slots) == 200
    assert min(gaps) == pytest.approx(0.1, abs=0.03)
    assert max(gaps) == pytest.approx(0.1, abs=0.03)
    assert slots[-1] - slots[0] == pytest.approx(19.9, abs=0.03)


@pytest.mark.parametrize(
    ("rate", "burst"), [(1.0, 1), (20 / 60, 1), (30.0, 1), (80.0, 1), (30.0, 5)]
)
def test_consumers_acting_at_their_slots_achieve_the_configured_rate(limiter, rate, burst):
    limit = Limit("provider:key", rate=rate, burst=burst)

    times = sorted(time.time() + limiter.reserve([limit], max_wait=1e6) for _ in range(100))

    achieved = (len(times) - burst) / (times[-1] - times[0])
    assert achieved == pytest.approx(rate, rel=0.05)
    window = 10 / rate
    for i, t in enumerate(times):
        in_window = sum(1 for u in times[i:] if u < t + window)
        assert in_window <= burst + 10


def test_a_pause_holds_every_key_until_it_ends(limiter):
    account, chat = Limit("acct", 100.0), Limit("chat", 100.0, burst=5)

    limiter.pause([account, chat], 2.0)

    assert limiter.acquire([account]) == pytest.approx(2.0, abs=0.05)
    assert limiter.acquire([chat]) == pytest.approx(2.0, abs=0.05)
    assert limiter.reserve([account, chat]) == pytest.approx(2.0, abs=0.05)
    assert limiter.reserve([account]) == pytest.approx(2.01, abs=0.05)


def test_a_pause_never_shortens_a_longer_wait(limiter):
    slow = Limit("slow", 0.1)
    limiter.reserve([slow])  # next slot in 10 s

    limiter.pause([slow], 1.0)

    assert limiter.acquire([slow]) == pytest.approx(10.0, abs=0.05)


def test_reserve_many_books_what_the_same_reserves_would_in_order(redis15, prefix):
    one_by_one = RateLimiter(redis15, prefix=prefix + "single:")
    together = RateLimiter(redis15, prefix=prefix + "many:")
    org, chat_a, chat_b = Limit("org", rate=2.0), Limit("chat:a", rate=1.0), Limit("chat:b", 1.0)
    requests = [
        [org, chat_a],
        [org, chat_b],
        [Limit("off", rate=None)],
        [org, chat_a],
        [],
        [chat_b],
        [org],
    ]

    expected = [one_by_one.reserve(limits) for limits in requests]
    delays = together.reserve_many(requests)

    assert expected == pytest.approx([0.0, 0.5, 0.0, 1.0, 0.0, 1.5, 1.5], abs=0.02)
    assert delays == pytest.approx(expected, abs=0.02)
    assert delays[2] == delays[4] == 0.0
    assert together.reserve([org]) == pytest.approx(2.0, abs=0.02), "the slots stay booked"


def test_reserve_many_with_no_active_limit_is_all_zero_and_writes_nothing(limiter, redis15, prefix):
    requests = [[Limit("a", rate=None)], [], [Limit("b", rate=0)]]

    assert limiter.reserve_many(requests) == [0.0, 0.0, 0.0]
    assert limiter.reserve_many([]) == []
    assert list(redis15.scan_iter(match=prefix + "*")) == []


def test_reserve_many_books_nothing_past_max_wait(limiter):
    limit = Limit("instagram:account:3", rate=1.0)

    delays = limiter.reserve_many([[limit], [limit], [limit]], max_wait=1.5)

    assert delays == pytest.approx([0.0, 1.0, 2.0], abs=0.02)
    assert limiter.reserve([limit]) == pytest.approx(2.0, abs=0.02), "the refused slot is free"


def test_reserve_many_refuses_a_key_twice_in_one_event(limiter):
    with pytest.raises(ValueError, match="once"):
        limiter.reserve_many([[Limit("x", rate=1.0)], [Limit("x", 1.0), Limit("x", 2.0)]])


def test_a_late_event_whose_slot_is_still_the_last_booking_gets_it_back(limiter):
    # A chat at 1/s: the event booked the chat's slot, then could not use it in time. Without
    # giving it back it would wait a whole second behind its own booking.
    chat = Limit("telegram:chat:7", rate=1.0)
    assert limiter.reserve_many([[chat]]) == [0.0]

    (delay,) = limiter.reserve_many([[chat]], booked_ago=[0.0])

    assert delay == pytest.approx(0.0, abs=0.005)
    assert limiter.reserve([chat]) == pytest.approx(1.0, abs=0.02), "booked once, not twice"


def test_a_late_event_never_takes_back_a_slot_booked_after_it(limiter):
    account = Limit("whatsapp:org:7", rate=1.0)
    assert limiter.reserve_many([[account], [account]]) == pytest.approx([0.0, 1.0], abs=0.02)

    (delay,) = limiter.reserve_many([[account]], booked_ago=[0.0])  # the first event, late

    assert delay == pytest.approx(2.0, abs=0.02)  # behind the slot booked after its own


def test_a_late_event_gives_back_only_the_keys_where_it_was_last(limiter):
    # Telegram: the bot's slot was followed by other chats' sends, the chat's was not.
    bot, chat = Limit("telegram:org:8", rate=2.0), Limit("telegram:chat:8:a", rate=0.5)
    other = Limit("telegram:chat:8:b", rate=0.5)
    assert limiter.reserve_many([[bot, chat], [bot, other]]) == pytest.approx([0.0, 0.5], abs=0.02)

    (delay,) = limiter.reserve_many([[bot, chat]], booked_ago=[0.0])

    assert delay == pytest.approx(1.0, abs=0.02)  # the bot's next slot; not the chat's 2 s


def test_booked_ago_needs_one_entry_per_request(limiter):
    with pytest.raises(ValueError, match="one entry per request"):
        limiter.reserve_many([[Limit("k", rate=1.0)]], booked_ago=[])
