"""message_deliver and message_sweep in-process: claims, slots, failures and poison messages."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from shared.metrics import Metrics
from shared.models import Message, MessageAttempt, MessageStatus
from shared.providers.base import ProviderError
from shared.ratelimit import RateLimiter
from shared.services import messages as service
from shared.services.integrations import integration_connect
from shared.services.messages import message_deliver, message_limits, message_sweep
from tests.factories import CANARY, make_member

pytestmark = pytest.mark.django_db
BOT = CANARY["telegram"]


@pytest.fixture
def org(sandbox, sandbox_client, settings):
    settings.TELEGRAM_API_BASE = sandbox.url
    sandbox_client.configure(telegram_chat_rate=1000, telegram_bot_rate=1000)
    sandbox_client.add_account("telegram", token=BOT, bot_username="corbi_unit_bot")
    org = make_member("acme", "alice", "admin").org
    integration_connect(organization=org, provider="telegram", token=BOT, extra={})
    return org


@pytest.fixture
def tools():
    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    prefix = f"test:{uuid.uuid4().hex}:"
    yield RateLimiter(client, prefix=prefix + "rl:"), Metrics(client, prefix=prefix + "m:")
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


def queued(org, to="4242", **fields):
    integration = org.integrations.get(provider="telegram")
    return Message.objects.create(
        organization=org,
        integration=integration,
        provider="telegram",
        to=to,
        body="hello",
        next_attempt_at=timezone.now(),
        **fields,
    )


def sends(sandbox_client):
    return [r for r in sandbox_client.requests("telegram") if r["path"].endswith("/sendMessage")]


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

    monkeypatch.setattr(service, "integration_adapter", broken)
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

    outcome = service._record_error(message, 9, timezone.now(), 0.1, late, tools[1])

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


def test_the_sweeper_requeues_an_interrupted_send_and_fails_a_poison_message(org, settings):
    settings.DELIVERY_MAX_INTERRUPTIONS = 3
    expired = timezone.now() - timedelta(seconds=5)
    once = queued(org, status=MessageStatus.SENDING, attempts=1, lease_expires_at=expired)
    poison = queued(
        org, to="4243", status=MessageStatus.SENDING, attempts=4, lease_expires_at=expired
    )
    MessageAttempt.objects.create(message=poison, number=1, started_at=expired, outcome="retry")

    swept = message_sweep()

    once.refresh_from_db()
    poison.refresh_from_db()
    assert swept == [once.pk]
    assert once.status == MessageStatus.QUEUED and once.lease_expires_at is None
    assert poison.status == MessageStatus.FAILED and poison.error_code == "interrupted"
    assert org.audit_events.filter(action="message.failed").count() == 1


def test_a_provider_429_pauses_the_account_for_every_other_message(org, tools, sandbox_client):
    limiter, metrics = tools
    sandbox_client.fault("telegram", status=429, retry_after=3, count=1)
    first, second = queued(org, to="5001"), queued(org, to="5002")

    told = message_deliver(message_id=first.pk, limiter=limiter, metrics=metrics)
    other = message_deliver(message_id=second.pk, limiter=limiter, metrics=metrics)

    assert told.status == "deferred" and told.delay >= 3
    assert other.status == "deferred" and other.delay == pytest.approx(3, abs=0.3)
    assert len(sends(sandbox_client)) == 1, "the second message did not hit the throttled account"
