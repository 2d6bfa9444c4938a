"""message_deliver(_batch) in-process: claims, slots, waves, failures."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from shared.delivery import recording, scheduling, sending
from shared.delivery.batch import message_deliver
from shared.delivery.scheduling import message_limits
from shared.models import Integration, Message, MessageStatus
from shared.providers.base import ProviderError
from shared.services.integrations import integration_connect
from tests.factories import make_member
from tests.shared.delivery.helpers import OTHER_BOT, deliver_batch, queued, sends

pytestmark = pytest.mark.django_db


def test_a_queued_message_is_claimed_sent_and_recorded(org, tools, sandbox_client):
    message = queued(org)

    outcome = message_deliver(message_id=message.pk, limiter=tools[0], metrics=tools[1])

    message.refresh_from_db()
    assert outcome.status == "sent"
    assert message.status == MessageStatus.SENT and message.attempts == 1
    assert [a.outcome for a in message.attempt_set.all()] == ["sent"]
    assert len(sends(sandbox_client)) == 1


def test_a_second_delivery_of_the_same_message_does_nothing(org, tools, sandbox_client):
    message = queued(org)
    message_deliver(message_id=message.pk, limiter=tools[0], metrics=tools[1])

    again = message_deliver(message_id=message.pk, limiter=tools[0], metrics=tools[1])

    assert again.status == "skipped"
    assert len(sends(sandbox_client)) == 1


def test_an_unexpected_error_after_the_claim_fails_the_message_once(
    org, tools, sandbox_client, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug in our own code")

    monkeypatch.setattr(sending, "integration_adapter", broken)
    message = queued(org)

    outcome = message_deliver(message_id=message.pk, limiter=tools[0], metrics=tools[1])

    message.refresh_from_db()
    assert outcome.status == "failed"
    assert message.status == MessageStatus.FAILED
    assert "Internal error while sending (RuntimeError)" in message.last_error
    assert message.error_code == "internal"
    assert [a.outcome for a in message.attempt_set.all()] == ["failed"]
    assert sends(sandbox_client) == []


def test_a_late_error_never_overwrites_a_sent_message(org, tools):
    message = queued(org)
    message_deliver(message_id=message.pk, limiter=tools[0], metrics=tools[1])
    message.refresh_from_db()
    late = ProviderError("late timeout", kind="transient", provider="telegram")

    outcome = recording.record_error(message, 9, timezone.now(), 0.1, late, tools[1])

    message.refresh_from_db()
    assert outcome.status == "skipped"
    assert message.status == MessageStatus.SENT and message.last_error == ""


def test_a_stale_rate_slot_is_booked_again_instead_of_bursting(org, tools, sandbox_client):
    limiter = tools[0]
    message = queued(org, rate_slot_at=timezone.now() - timedelta(seconds=5))
    limits = message_limits(message, message.integration)
    for _ in range(3):  # the chat's next slots are taken by other messages
        limiter.reserve(limits)

    outcome = message_deliver(message_id=message.pk, limiter=limiter, metrics=tools[1])

    message.refresh_from_db()
    assert outcome.status == "deferred" and outcome.delay > 1
    assert message.status == MessageStatus.QUEUED and message.rate_slot_at > timezone.now()
    assert sends(sandbox_client) == []


def test_a_fresh_rate_slot_is_used_without_booking_again(org, tools, sandbox_client):
    limiter = tools[0]
    message = queued(org, rate_slot_at=timezone.now())
    for _ in range(3):
        limiter.reserve(message_limits(message, message.integration))

    outcome = message_deliver(message_id=message.pk, limiter=limiter, metrics=tools[1])

    assert outcome.status == "sent"
    assert len(sends(sandbox_client)) == 1


def test_a_provider_429_pauses_the_account_for_every_other_message(org, tools, sandbox_client):
    limiter, metrics = tools
    sandbox_client.fault("telegram", status=429, retry_after=3, count=1)
    first, second = queued(org, to="5001"), queued(org, to="5002")

    told = message_deliver(message_id=first.pk, limiter=limiter, metrics=metrics)
    other = message_deliver(message_id=second.pk, limiter=limiter, metrics=metrics)

    assert told.status == "deferred" and told.delay >= 3
    assert other.status == "deferred" and other.delay == pytest.approx(3, abs=0.3)
    assert len(sends(sandbox_client)) == 1, "the second message did not hit the throttled account"


# --- batches: message_deliver_batch ------------------------------------------------------------


def unlimited(org, provider="telegram"):
    """Lift the per-org rate so a batch to distinct chats is limited by nothing but the chats."""
    Integration.objects.filter(organization=org, provider=provider).update(
        extra={"rate_limit_per_second": 1_000_000}
    )


def test_a_batch_is_sent_concurrently_and_costs_the_same_queries_for_5_or_20(
    org, tools, sandbox_client
):
    unlimited(org)
    small = [queued(org, to=str(5000 + i)) for i in range(5)]
    large = [queued(org, to=str(6000 + i)) for i in range(20)]

    with CaptureQueriesContext(connection) as small_queries:
        small_outcomes = deliver_batch([m.pk for m in small], tools, 8)
    with CaptureQueriesContext(connection) as large_queries:
        large_outcomes = deliver_batch([m.pk for m in large], tools, 8)

    assert {o.status for o in small_outcomes.values()} == {"sent"}
    assert {pk: o.status for pk, o in large_outcomes.items()} == {m.pk: "sent" for m in large}
    # Besides the fixed round trips, one UPDATE per group of sends starting together.
    starts = [q for q in large_queries if '"attempts" + 1' in q["sql"]]
    fixed = [q for q in large_queries if q not in starts]
    small_fixed = [q for q in small_queries if '"attempts" + 1' not in q["sql"]]
    assert len(fixed) == len(small_fixed) <= 9, [q["sql"] for q in fixed]
    assert 1 <= len(starts) <= len(large)
    for message in large:
        message.refresh_from_db()
        assert message.status == MessageStatus.SENT and message.attempts == 1
        assert message.provider_message_id == f"{message.to}:1", "each row got its own id"
        attempts = list(message.attempt_set.all())
        assert [(a.number, a.outcome) for a in attempts] == [(1, "sent")]
    chats = sorted(r["body"]["chat_id"] for r in sends(sandbox_client))
    assert chats == sorted(m.to for m in small + large), "exactly one request per message"


def test_a_mixed_batch_sends_only_the_due_queued_messages(org, tools, sandbox_client):
    unlimited(org)
    done = queued(org, to="5101", status=MessageStatus.SENT, attempts=1)
    later = queued(org, to="5102", next_attempt_at=timezone.now() + timedelta(hours=1))
    missing = Message.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000
    good = [queued(org, to="5103"), queued(org, to="5104")]
    ids = [done.pk, later.pk, missing, good[0].pk, good[1].pk]

    outcomes = deliver_batch(ids, tools, 4)

    assert [outcomes[pk].status for pk in ids] == ["skipped", "skipped", "skipped", "sent", "sent"]
    assert outcomes[later.pk].reason == "not due"
    later.refresh_from_db()
    assert later.status == MessageStatus.QUEUED and later.attempts == 0
    assert not later.attempt_set.exists() and not done.attempt_set.exists()
    assert sorted(r["body"]["chat_id"] for r in sends(sandbox_client)) == ["5103", "5104"]


def test_the_same_id_twice_in_a_batch_is_sent_once(org, tools, sandbox_client):
    message = queued(org)

    outcomes = deliver_batch([message.pk, message.pk], tools, 2)

    assert {pk: o.status for pk, o in outcomes.items()} == {message.pk: "sent"}
    assert message.attempt_set.count() == 1
    assert len(sends(sandbox_client)) == 1


def test_a_rate_limit_inside_a_batch_sends_one_and_books_the_others_in_turn(
    org, tools, sandbox_client
):
    Integration.objects.filter(organization=org, provider="telegram").update(
        extra={"rate_limit_per_second": 2}
    )
    messages = [queued(org, to=str(5200 + i)) for i in range(5)]
    ids = [m.pk for m in messages]

    before = timezone.now()
    outcomes = deliver_batch(ids, tools, 4)

    assert outcomes[ids[0]].status == "sent"
    later = [outcomes[pk] for pk in ids[1:]]
    assert [o.status for o in later] == ["deferred"] * 4
    delays = [o.delay for o in later]
    assert delays == pytest.approx([0.5, 1.0, 1.5, 2.0], abs=0.05)
    assert all(a < b for a, b in itertools.pairwise(delays))
    for message, delay in zip(messages[1:], delays, strict=True):
        message.refresh_from_db()
        assert message.status == MessageStatus.QUEUED and message.attempts == 0
        assert message.rate_slot_at is not None
        assert (message.rate_slot_at - before).total_seconds() == pytest.approx(delay, abs=0.2)
    assert [r["body"]["chat_id"] for r in sends(sandbox_client)] == ["5200"]


def test_messages_whose_lease_runs_short_waiting_for_a_thread_are_released_unsent(
    org, tools, sandbox_client, settings
):
    settings.DELIVERY_LEASE_SECONDS = 3
    settings.PROVIDER_TIMEOUT_SECONDS = 2  # a call may start only in the first second
    unlimited(org)
    sandbox_client.fault("telegram", mode="latency", latency_ms=1500, count=3)
    messages = [queued(org, to=str(5300 + i)) for i in range(3)]
    ids = [m.pk for m in messages]

    outcomes = deliver_batch(ids, tools, 1)

    assert outcomes[ids[0]].status == "sent"
    for message in messages[1:]:
        assert (outcomes[message.pk].status, outcomes[message.pk].delay) == ("deferred", 0.0)
        message.refresh_from_db()
        assert message.status == MessageStatus.QUEUED
        assert message.attempts == 0 and message.lease_expires_at is None
        assert not message.attempt_set.exists()
    assert [r["body"]["chat_id"] for r in sends(sandbox_client)] == ["5300"]


def test_a_token_that_no_longer_decrypts_holds_only_its_own_integrations_messages(
    org, tools, sandbox_client
):
    other_bot = OTHER_BOT
    sandbox_client.add_account("telegram", token=other_bot, bot_username="corbi_other_bot")
    other = make_member("globex", "mallory", "admin").org
    integration_connect(organization=other, provider="telegram", token=other_bot, extra={})
    unlimited(org)
    unlimited(other)
    Integration.objects.filter(organization=other).update(token_encrypted="gAAAAAnot-a-token")
    good = [queued(org, to="5401"), queued(org, to="5402")]
    broken = [queued(other, to="5403"), queued(other, to="5404")]
    ids = [good[0].pk, broken[0].pk, good[1].pk, broken[1].pk]

    outcomes = deliver_batch(ids, tools, 4)

    assert {pk: o.status for pk, o in outcomes.items()} == {
        good[0].pk: "sent",
        broken[0].pk: "deferred",
        good[1].pk: "sent",
        broken[1].pk: "deferred",
    }
    for message in broken:
        message.refresh_from_db()
        assert message.status == MessageStatus.QUEUED and message.error_kind == "key_unavailable"
        assert "does not decrypt" in message.last_error
    for message in good:
        message.refresh_from_db()
        assert message.status == MessageStatus.SENT
    assert sorted(r["body"]["chat_id"] for r in sends(sandbox_client)) == ["5401", "5402"]


def published(client) -> list[tuple[list[int], str]]:
    """(ids, eta) of every deliver_messages task waiting in the broker queue."""
    found = []
    for raw in client.lrange("corbi", 0, -1):
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] == "workers.tasks.deliver_messages"
        (ids,) = json.loads(base64.b64decode(envelope["body"]))[0]
        found.append((ids, envelope["headers"]["eta"]))
    return found


def test_deferred_messages_with_close_slots_are_published_as_one_task_per_wave(
    org, tools, sandbox, sandbox_client, broker_queue, settings
):
    # Instagram at 20 msg/s: slots 50 ms apart, a burst of 2 (0.1 s of the rate). The slots that
    # are now are used; the others go out in waves spanning at most WAVE (75 ms), one task each,
    # due at the wave's last slot: no send before its slot.
    settings.GRAPH_API_BASE = sandbox.url + "/v23.0"
    ig_id = "17841400000005601"
    token = "IGAAwaveTestToken" + "x" * 30
    sandbox_client.add_account("instagram", access_token=token, ig_id=ig_id, username="waves")
    integration = integration_connect(
        organization=org,
        provider="instagram",
        token=token,
        extra={"instagram_scoped_id": ig_id, "rate_limit_per_second": 20},
    )
    messages = [
        Message.objects.create(
            organization=org,
            integration_id=integration.pk,
            provider="instagram",
            to=str(5600 + i),
            body="hello",
            next_attempt_at=timezone.now(),
        )
        for i in range(10)
    ]
    ids = [m.pk for m in messages]

    outcomes = deliver_batch(ids, tools, 4)

    sent = [pk for pk in ids if outcomes[pk].status == "sent"]
    deferred = [pk for pk in ids if outcomes[pk].status == "deferred"]
    assert len(sent) == 2 and len(deferred) == 8
    assert len(sandbox_client.requests("instagram")) == 2
    tasks = published(broker_queue)
    assert sorted(pk for task_ids, _ in tasks for pk in task_ids) == sorted(deferred)
    assert len(tasks) < len(deferred)  # waves, not one task per message
    rows = Message.objects.in_bulk(deferred)
    for task_ids, eta in tasks:
        due = datetime.fromisoformat(eta)
        for pk in task_ids:
            row = rows[pk]
            assert row.status == MessageStatus.QUEUED
            assert row.next_attempt_at == due
            assert timedelta(0) <= due - row.rate_slot_at <= scheduling.WAVE
    slots = sorted(row.rate_slot_at for row in rows.values())
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([0.05] * len(gaps), abs=0.01)  # booked at the limit's spacing


def test_telegram_messages_bot_and_chat_limits_defer_in_waves_never_before_their_slots(
    org, tools, sandbox_client, broker_queue
):
    # Bot at 20 msg/s (a burst of 2), one chat per message: the first two go at once, the
    # other three (slots 50 ms apart) run as two waves, each due at its last slot.
    Integration.objects.filter(organization=org, provider="telegram").update(
        extra={"rate_limit_per_second": 20}
    )
    ids = [queued(org, to=str(5650 + i)).pk for i in range(5)]

    outcomes = deliver_batch(ids, tools, 4)

    assert [outcomes[pk].status for pk in ids] == ["sent"] * 2 + ["deferred"] * 3
    tasks = published(broker_queue)
    assert sorted(task_ids for task_ids, _ in tasks) == [ids[2:4], ids[4:]]
    rows = Message.objects.in_bulk(ids[2:])
    for task_ids, eta in tasks:
        for pk in task_ids:
            due = datetime.fromisoformat(eta)
            assert rows[pk].next_attempt_at == due
            assert timedelta(0) <= due - rows[pk].rate_slot_at <= scheduling.WAVE


def test_a_slow_limit_is_never_sent_early_each_slot_is_its_own_task(
    org, tools, sandbox_client, broker_queue
):
    # 5 msg/s: slots 0.2 s apart, wider than a wave, so each deferred message runs at its slot.
    Integration.objects.filter(organization=org, provider="telegram").update(
        extra={"rate_limit_per_second": 5}
    )
    ids = [queued(org, to=str(5700 + i)).pk for i in range(4)]

    outcomes = deliver_batch(ids, tools, 4)

    assert [outcomes[pk].status for pk in ids] == ["sent", "deferred", "deferred", "deferred"]
    tasks = published(broker_queue)
    assert sorted(task_ids for task_ids, _ in tasks) == [[pk] for pk in ids[1:]]
    rows = Message.objects.in_bulk(ids[1:])
    for (pk,), eta in tasks:
        assert rows[pk].rate_slot_at == rows[pk].next_attempt_at == datetime.fromisoformat(eta)


@pytest.mark.parametrize(
    ("rate", "second"),
    [(0.5, "deferred"), (1000, "sent")],
    ids=["binding-limit-deferred-to-a-fresh-slot", "non-binding-limit-sent"],
)
def test_a_send_that_waits_past_its_slot_takes_a_fresh_slot_and_goes_only_if_it_is_now(
    org, tools, sandbox_client, rate, second
):
    # Two messages with booked slots (now) on one send thread; the provider takes 300 ms, so
    # the second call reaches the start gate 0.3 s after its slot, past SLOT_TOLERANCE (0.1 s).
    # It books a fresh slot there: under a limit another sender booked right after its slot
    # (0.5/s: the next free slot is 4 s away) it is deferred to that slot unsent; under a limit
    # with room it goes.
    Integration.objects.filter(organization=org, provider="telegram").update(
        extra={"rate_limit_per_second": rate}
    )
    sandbox_client.fault("telegram", mode="latency", latency_ms=300, count=2)
    now = timezone.now()
    first, late = (queued(org, to=str(5800 + i), rate_slot_at=now) for i in range(2))
    limiter = tools[0]
    account = message_limits(late, late.integration)[:1]
    booked = limiter.reserve_many([account, account])  # its own slot, then another sender's
    assert booked == [0.0, pytest.approx(1 / rate, abs=0.02)]

    outcomes = deliver_batch([first.pk, late.pk], tools, 1)

    assert outcomes[first.pk].status == "sent"
    assert outcomes[late.pk].status == second
    late.refresh_from_db()
    if second == "deferred":
        assert late.status == MessageStatus.QUEUED and late.attempts == 0
        assert not late.attempt_set.exists()
        slot = (late.rate_slot_at - now).total_seconds()
        assert 3.5 < slot < 4.5  # the fresh slot, booked at the gate behind the other's
        assert late.next_attempt_at == late.rate_slot_at
        assert outcomes[late.pk].due_at == late.next_attempt_at
        assert [r["body"]["chat_id"] for r in sends(sandbox_client)] == ["5800"]
    else:
        assert late.status == MessageStatus.SENT
        assert len(sends(sandbox_client)) == 2


def test_a_limiter_that_does_not_answer_holds_the_batch_unsent_for_a_backoff_step(
    org, tools, sandbox_client, settings
):
    # Redis (the limiter) is unreachable when the sends start: nothing goes out, no attempt or
    # retry is counted, and the messages wait one backoff step before trying again.
    import redis

    from shared.ratelimit import RateLimiter

    down = RateLimiter(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    messages = [queued(org, to=str(5900 + i)) for i in range(3)]
    before = timezone.now()

    outcomes = deliver_batch([m.pk for m in messages], (down, tools[1]), 4)

    assert {o.status for o in outcomes.values()} == {"deferred"}
    assert sends(sandbox_client) == []
    for message in messages:
        message.refresh_from_db()
        assert message.status == MessageStatus.QUEUED
        assert message.attempts == 0 and message.retries == 0
        assert not message.attempt_set.exists()
        wait = (message.next_attempt_at - before).total_seconds()
        assert (
            settings.DELIVERY_BACKOFF_BASE_SECONDS
            <= wait
            < settings.DELIVERY_BACKOFF_BASE_SECONDS + 5
        )
