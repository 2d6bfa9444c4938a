"""Scheduled sends end to end in-process: published when due (ETA or sweeper), never lost,
and cancel racing a worker's claim; sends are observed on the sandbox over HTTP."""

from __future__ import annotations

import base64
import json
import threading
from datetime import datetime, timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection, connections
from django.utils import timezone

from shared.delivery.batch import message_deliver_batch
from shared.delivery.sweeper import _due, message_sweep
from shared.errors import IdempotencyKeyReused, MessageNotCancellable
from shared.models import Message, MessageStatus
from shared.services.messages import message_cancel, send_message
from tests.shared.delivery.helpers import deliver_batch, queued, sends

QUEUE = "corbi"


@pytest.fixture
def broker():
    """drain() -> [(ids, eta)] of the deliver tasks in this run's broker queue (emptied around
    the test; the queue of settings.CELERY_BROKER_URL, i.e. this run's REDIS_URL)."""
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.delete(QUEUE)

    def drain() -> list[tuple[list[int], str | None]]:
        found = []
        for raw in client.lrange(QUEUE, 0, -1):
            envelope = json.loads(raw)
            (ids,) = json.loads(base64.b64decode(envelope["body"]))[0]
            found.append((ids, envelope["headers"].get("eta")))
        client.delete(QUEUE)
        return found

    yield drain
    client.delete(QUEUE)


def schedule(org, seconds: float, to: str = "4242", **kwargs) -> Message:
    send_at = timezone.now() + timedelta(seconds=seconds)
    return send_message(org, "telegram", to, "Reminder: table at 8", send_at=send_at, **kwargs)


def backdate(message: Message, seconds: float, **fields) -> None:
    """Make `message` due `seconds` ago (the DB is the clock the sweeper reads)."""
    due = timezone.now() - timedelta(seconds=seconds)
    Message.objects.filter(pk=message.pk).update(next_attempt_at=due, **fields)


@pytest.mark.django_db
def test_a_near_send_at_is_published_with_its_eta(org, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        message = schedule(org, 120)

    message.refresh_from_db()
    assert message.status == MessageStatus.SCHEDULED
    assert message.next_attempt_at == message.send_at and message.enqueued_at is not None
    ((ids, eta),) = broker()
    assert ids == [message.pk] and datetime.fromisoformat(eta) == message.send_at


@pytest.mark.django_db
def test_a_far_send_at_waits_in_the_db_and_the_sweeper_sends_it_when_due(
    org, tools, sandbox_client, broker, django_capture_on_commit_callbacks, settings
):
    with django_capture_on_commit_callbacks(execute=True):
        message = schedule(org, settings.MAX_COUNTDOWN_SECONDS + 3600)
    assert broker() == [] and message.enqueued_at is None
    assert message_sweep() == []  # not due yet

    backdate(message, 1)
    assert message_sweep() == [message.pk]

    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    ((ids, _),) = broker()
    assert deliver_batch(ids, tools)[message.pk].status == "sent"
    assert [r["body"]["chat_id"] for r in sends(sandbox_client)] == ["4242"]


@pytest.mark.django_db
def test_a_scheduled_message_survives_a_broker_flush(
    org, tools, sandbox_client, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        message = schedule(org, 30)
    ((eta_ids, _),) = broker()  # published with its ETA ... and now gone from the queue

    backdate(message, 1)
    assert message_sweep() == [message.pk]  # due and unclaimed: at the first sweep, no grace

    ((ids, _),) = broker()
    assert deliver_batch(ids, tools)[message.pk].status == "sent"
    # Had the ETA task survived too, it would find the message sent: one send either way.
    assert deliver_batch(eta_ids, tools)[message.pk].status != "sent"
    assert len(sends(sandbox_client)) == 1


@pytest.mark.django_db
def test_a_worker_sends_a_due_scheduled_row_and_skips_one_not_due(org, tools, sandbox_client):
    due = queued(org, status=MessageStatus.SCHEDULED)
    later = queued(
        org,
        to="4243",
        status=MessageStatus.SCHEDULED,
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )

    outcomes = deliver_batch([due.pk, later.pk], tools)

    assert outcomes[due.pk].status == "sent" and outcomes[later.pk].status == "skipped"
    later.refresh_from_db()
    assert later.status == MessageStatus.SCHEDULED
    assert [r["body"]["chat_id"] for r in sends(sandbox_client)] == [due.to]


@pytest.mark.django_db
def test_a_cancelled_message_is_never_sent(org, tools, sandbox_client):
    scheduled = queued(org, status=MessageStatus.SCHEDULED)
    waiting = queued(org, to="4243", enqueued_at=None)
    for message in (scheduled, waiting):
        assert message_cancel(organization=org, message_id=message.pk).status == "cancelled"

    outcomes = deliver_batch([scheduled.pk, waiting.pk], tools)

    assert {o.status for o in outcomes.values()} == {"skipped"}
    assert message_sweep() == []
    assert sends(sandbox_client) == []
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.CANCELLED}


@pytest.mark.django_db
def test_idempotency_compares_send_at(org):
    send_at = timezone.now() + timedelta(hours=1)
    first = send_message(org, "telegram", "4242", "hi", idempotency_key="k", send_at=send_at)
    again = send_message(
        org, "telegram", "4242", "hi", idempotency_key="k", send_at=send_at.isoformat()
    )
    assert again.pk == first.pk

    for other in (send_at + timedelta(minutes=1), None):
        with pytest.raises(IdempotencyKeyReused) as caught:
            send_message(org, "telegram", "4242", "hi", idempotency_key="k", send_at=other)
        assert "send_at" in caught.value.errors["idempotency_key"][0]


@pytest.mark.django_db
def test_the_sweeper_finds_due_scheduled_rows_through_the_partial_index(org):
    query = Message.objects.filter(_due(MessageStatus.SCHEDULED, timezone.now())).order_by(
        "next_attempt_at"
    )[:5000]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query.explain()

    assert "message_scheduled_due" in plan


def _race_once(org, message: Message, tools) -> tuple[str, str]:
    """Cancel and deliver `message` at once from two threads; (cancel's, worker's) result."""
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}
    limiter, metrics = tools

    def cancel() -> None:
        try:
            barrier.wait()
            message_cancel(organization=org, message_id=message.pk)
            results["cancel"] = "won"
        except MessageNotCancellable:
            results["cancel"] = "refused"
        finally:
            connections.close_all()

    def deliver() -> None:
        try:
            barrier.wait()
            outcome = message_deliver_batch(
                message_ids=[message.pk], limiter=limiter, metrics=metrics
            )[message.pk]
            results["worker"] = outcome.status
        finally:
            connections.close_all()

    threads = [threading.Thread(target=cancel), threading.Thread(target=deliver)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results["cancel"], results["worker"]


@pytest.mark.django_db(transaction=True)
def test_cancel_racing_a_worker_exactly_one_wins_and_a_cancelled_message_is_never_sent(
    org, tools, sandbox_client
):
    # No rate-limit waits: each worker either claims and sends, or finds the row cancelled.
    org.integrations.filter(provider="telegram").update(extra={"rate_limit_per_second": 1000})
    outcomes = []
    for i in range(12):
        status = MessageStatus.SCHEDULED if i % 2 else MessageStatus.QUEUED
        message = queued(org, to=str(7000 + i), status=status)
        cancel, worker = _race_once(org, message, tools)
        message.refresh_from_db()
        sent_to = [r["body"]["chat_id"] for r in sends(sandbox_client)].count(message.to)
        if cancel == "won":
            assert worker == "skipped" and message.status == MessageStatus.CANCELLED
            assert sent_to == 0
        else:
            assert worker == "sent" and message.status == MessageStatus.SENT
            assert sent_to == 1
        outcomes.append(cancel)
    assert message_sweep() == []
    assert len(sends(sandbox_client)) == outcomes.count("refused")
