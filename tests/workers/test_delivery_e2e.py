"""Delivery end to end: API/outbox → Redis → real worker processes → sandbox → row updated."""

from __future__ import annotations

import base64
import itertools
import json
import math
import signal

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from shared.models import Booking, Integration, Message, MessageStatus
from shared.services.bookings import booking_upsert
from shared.services.integrations import integration_connect
from shared.services.messages import message_create_bulk, send_message
from tests.factories import CANARY, SANDBOX_ACCOUNTS, VALID_EXTRA, assert_no_canary, make_member
from tests.workers.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

DESTINATIONS = {
    "whatsapp": "+14155550100",
    "sendgrid": "someone@example.test",
    "telegram": "4242",
    "instagram": "1234567890",
}


def connect_all(sandbox_client, org, providers=tuple(SANDBOX_ACCOUNTS), **extra_overrides):
    for provider in providers:
        sandbox_client.add_account(provider, **SANDBOX_ACCOUNTS[provider])
        integration_connect(
            organization=org,
            provider=provider,
            token=CANARY[provider],
            extra={**VALID_EXTRA[provider], **extra_overrides.get(provider, {})},
        )


def terminal(ids):
    def check():
        return (
            not Message.objects.filter(pk__in=ids)
            .exclude(status__in=[MessageStatus.SENT, MessageStatus.FAILED])
            .exists()
        )

    return check


def sends(sandbox_client, provider):
    path_part = {
        "whatsapp": "/Messages.json",
        "sendgrid": "/v3/mail/send",
        "telegram": "/sendMessage",
        "instagram": "/messages",
    }[provider]
    return [r for r in sandbox_client.requests(provider) if r["path"].endswith(path_part)]


@pytest.fixture
def org(transactional_db):
    return make_member("acme", "alice", "admin").org


def test_each_provider_delivers_once_through_a_real_worker(stack, sandbox_client, org):
    connect_all(sandbox_client, org)
    stack.start_worker()

    messages = {
        provider: send_message(
            org, provider, to, "hello from corbi", subject="Hi" if provider == "sendgrid" else ""
        )
        for provider, to in DESTINATIONS.items()
    }
    wait_for(terminal([m.pk for m in messages.values()]), 60, "all messages terminal")

    for provider, message in messages.items():
        message.refresh_from_db()
        assert message.status == MessageStatus.SENT, (provider, message.last_error)
        assert message.provider_message_id
        assert message.attempt_set.get().outcome == "sent"
        assert len(sends(sandbox_client, provider)) == 1


def test_5xx_then_success_retries_with_backoff(stack, sandbox_client, org):
    connect_all(sandbox_client, org, ["telegram"])
    sandbox_client.fault("telegram", status=503, count=2)
    stack.start_worker()

    message = send_message(org, "telegram", "4242", "retry me")
    wait_for(terminal([message.pk]), 60, "message terminal")

    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert [a.outcome for a in message.attempt_set.all()] == ["retry", "retry", "sent"]
    assert len(sends(sandbox_client, "telegram")) == 3


def test_telegram_429_waits_retry_after_before_the_next_request(stack, sandbox_client, org):
    connect_all(sandbox_client, org, ["telegram"])
    sandbox_client.fault("telegram", status=429, retry_after=2, count=1)
    stack.start_worker()

    message = send_message(org, "telegram", "4242", "wait for it")
    wait_for(terminal([message.pk]), 60, "message terminal")

    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    first, second = sends(sandbox_client, "telegram")
    assert first["status"] == 429
    assert second["time"] - first["time"] >= 2.0


def test_permanent_failure_fails_at_once_and_is_recorded(stack, sandbox_client, org):
    connect_all(sandbox_client, org, ["telegram"])
    stack.start_worker()

    message = send_message(org, "telegram", "404", "nobody home")
    wait_for(terminal([message.pk]), 60, "message terminal")

    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert "chat not found" in message.last_error
    assert message.error_kind == "permanent"
    assert len(sends(sandbox_client, "telegram")) == 1
    assert org.audit_events.filter(action="message.failed").count() == 1


def test_rejected_credentials_fail_and_stop_further_calls(stack, sandbox_client, org):
    integration_connect(organization=org, provider="telegram", token=CANARY["telegram"], extra={})
    stack.start_worker()  # the sandbox knows no such bot: 401

    first = send_message(org, "telegram", "4242", "one")
    wait_for(terminal([first.pk]), 60, "first message terminal")
    second = send_message(org, "telegram", "4242", "two")
    wait_for(terminal([second.pk]), 60, "second message terminal")

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == second.status == MessageStatus.FAILED
    assert first.error_kind == "credentials"
    assert (
        Integration.objects.get(organization=org, provider="telegram").credentials_rejected_at
        is not None
    )
    assert len(sends(sandbox_client, "telegram")) == 1, "no second call against a dead token"


def test_reused_idempotency_key_sends_exactly_once(stack, sandbox_client, org):
    connect_all(sandbox_client, org, ["sendgrid"])
    stack.start_worker()
    member = make_member("acme", "bob", "member")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {member.token}", HTTP_X_ORG_ID=str(org.pk))
    body = {
        "provider": "sendgrid",
        "to": "a@example.test",
        "subject": "Hi",
        "body": "once",
        "idempotency_key": "order-42",
    }

    first = client.post("/api/messages/", body, format="json")
    second = client.post("/api/messages/", body, format="json")

    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["message_id"] == second.json()["message_id"]
    wait_for(terminal([first.json()["message_id"]]), 60, "message terminal")
    assert len(sends(sandbox_client, "sendgrid")) == 1


def test_broker_payloads_hold_ids_only(stack, sandbox_client, org, broker):
    connect_all(sandbox_client, org, ["whatsapp", "telegram"])
    ids = [send_message(org, "whatsapp", "+14155550100", f"m{i}").pk for i in range(3)]

    raw = broker.lrange("corbi", 0, -1)
    assert len(raw) == 3
    for item in raw:
        text = item.decode()
        assert_no_canary(text)
        envelope = json.loads(text)
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        assert args in ([[pk]] for pk in ids)  # one batch of one message id, nothing else


def test_worker_killed_mid_run_loses_nothing_and_duplicates_are_bounded_and_visible(
    stack, sandbox_client, org
):
    connect_all(sandbox_client, org, ["instagram"], instagram={"rate_limit_per_second": 1000})
    sandbox_client.fault("instagram", mode="latency", latency_ms=300, seconds=60)
    stack.start_worker("w1", concurrency=8)
    ids = [
        m.pk for m in (send_message(org, "instagram", str(1000 + i), f"n{i}") for i in range(120))
    ]

    wait_for(
        lambda: Message.objects.filter(status=MessageStatus.SENT).count() >= 20, 60, "some sent"
    )
    stack.kill("w1", signal.SIGKILL)
    stack.start_beat()
    stack.start_worker("w2", concurrency=8)
    wait_for(terminal(ids), 120, "all messages terminal after the kill")

    assert Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() == 120
    per_recipient: dict[str, int] = {}
    for request in sends(sandbox_client, "instagram"):
        if request["status"] == 200:
            recipient = request["body"]["recipient"]["id"]
            per_recipient[recipient] = per_recipient.get(recipient, 0) + 1
    assert len(per_recipient) == 120
    duplicated = {r for r, n in per_recipient.items() if n > 1}
    assert len(duplicated) <= 8 * 2, "duplicates bounded by the in-flight work at the kill"
    for message in Message.objects.filter(pk__in=ids, to__in=duplicated):
        # an interrupted attempt leaves a gap: attempts counted at claim, no outcome row
        assert message.attempts > message.attempt_set.count(), "duplicate must be visible"


def test_redis_flushall_mid_run_sweeper_delivers_everything(stack, sandbox_client, org, broker):
    connect_all(sandbox_client, org, ["sendgrid"], sendgrid={"rate_limit_per_second": 1000})
    ids = [
        m.pk
        for m in (
            send_message(org, "sendgrid", f"u{i}@example.test", "hi", subject="s")
            for i in range(100)
        )
    ]
    assert broker.llen("corbi") == 100
    broker.flushall()

    stack.start_worker()
    stack.start_beat()
    wait_for(terminal(ids), 90, "sweeper delivered everything")

    assert Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() == 100
    assert len(sends(sandbox_client, "sendgrid")) == 100


def test_two_workers_never_exceed_one_message_per_second_to_one_chat(stack, sandbox_client, org):
    connect_all(sandbox_client, org, ["telegram"])
    stack.start_worker("w1", concurrency=4)
    stack.start_worker("w2", concurrency=4)

    ids = [send_message(org, "telegram", "777", f"tick {i}").pk for i in range(6)]
    wait_for(terminal(ids), 60, "all ticks sent")

    requests = sorted(sends(sandbox_client, "telegram"), key=lambda r: r["time"])
    assert [r["status"] for r in requests] == [200] * 6, "the sandbox never had to answer 429"
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(requests)]
    assert min(gaps) >= 0.95, gaps


def test_a_booking_synced_twice_is_one_event(stack, sandbox_client, org):
    connect_all(sandbox_client, org, ["google_calendar"])
    stack.start_worker()
    data = {
        "summary": "Haircut",
        "start": "2030-01-01T10:00:00Z",
        "end": "2030-01-01T11:00:00Z",
        "attendees": ["c@example.test"],
    }

    booking_upsert(organization=org, booking_id="bk-1", data=data)
    wait_for(lambda: Booking.objects.get(booking_id="bk-1").status == "synced", 60, "first sync")
    booking_upsert(organization=org, booking_id="bk-1", data={**data, "summary": "Haircut (moved)"})
    wait_for(lambda: Booking.objects.get(booking_id="bk-1").synced_version == 2, 60, "second sync")

    booking = Booking.objects.get(booking_id="bk-1")
    events = [
        r for r in sandbox_client.requests("google_calendar") if r["method"] in ("POST", "PUT")
    ]
    created = [r for r in events if r["method"] == "POST" and r["status"] == 200]
    assert len(created) == 1, "one insert; the replay became an update"
    assert all(booking.event_id in r["path"] or r["method"] == "POST" for r in events)


def test_a_bulk_is_published_as_batches_covering_every_id_once(stack, sandbox_client, org, broker):
    connect_all(sandbox_client, org, ["telegram"])
    created = message_create_bulk(
        organization=org,
        data={
            "messages": [
                {"provider": "telegram", "to": str(7000 + i), "body": "hi"} for i in range(60)
            ]
        },
    )
    ids = [message.pk for message, _ in created]

    raw = broker.lrange("corbi", 0, -1)
    assert len(raw) == math.ceil(60 / settings.DELIVERY_BATCH_SIZE)
    published = []
    for item in raw:
        envelope = json.loads(item)
        assert envelope["headers"]["task"] == "workers.tasks.deliver_messages"
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        assert len(args) == 1 and 1 <= len(args[0]) <= settings.DELIVERY_BATCH_SIZE
        published += args[0]
    assert sorted(published) == sorted(ids) and len(set(ids)) == 60
