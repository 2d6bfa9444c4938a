"""shared.events.announce: every status change the delivery and receipt code make is told to the
product once, as a signed-webhook event and as the in-process signal, in the same transaction."""

from __future__ import annotations

import pytest

from shared.events.models import Event
from shared.events.signals import message_status_changed
from shared.models import Message, MessageStatus
from shared.receipts.apply import record_receipts
from shared.receipts.types import MessageRef, Receipt
from shared.services.integrations import integration_connect
from tests.factories import CANARY, make_member
from tests.receivers import make_endpoint
from tests.shared.delivery.helpers import deliver_batch, queued

pytestmark = pytest.mark.django_db

BOT = CANARY["telegram"]


@pytest.fixture
def org(sandbox, sandbox_client, settings):
    settings.TELEGRAM_API_BASE = sandbox.url
    sandbox_client.configure(telegram_chat_rate=1000, telegram_bot_rate=1000)
    sandbox_client.add_account("telegram", token=BOT, bot_username="corbi_events_bot")
    org = make_member("acme", "alice", "admin").org
    # No shared limit in the way: a batch's sends all go at once.
    integration_connect(
        organization=org,
        provider="telegram",
        token=BOT,
        extra={"rate_limit_per_second": 10_000},
    )
    return org


@pytest.fixture
def signals():
    seen: list[tuple[int, str, str]] = []

    def on_change(sender, message, old_status, new_status, **kwargs):
        seen.append((message.pk, old_status, new_status))

    message_status_changed.connect(on_change)
    yield seen
    message_status_changed.disconnect(on_change)


def test_sent_and_failed_sends_become_events_and_signals(org, tools, signals):
    make_endpoint(org, "http://127.0.0.1:9/hook")
    ok, refused = queued(org, "4242"), queued(org, "404")  # the sandbox: chat not found

    deliver_batch([ok.pk, refused.pk], tools)

    events = {e.data["message_id"]: e for e in Event.objects.all()}
    assert events[ok.pk].type == "message.sent"
    assert events[ok.pk].data["provider_message_id"]
    assert events[refused.pk].type == "message.failed"
    assert events[refused.pk].data["reason"]
    assert sorted(signals) == sorted(
        [(ok.pk, "sending", "sent"), (refused.pk, "sending", "failed")]
    )
    assert all(BOT not in str(e.data) for e in events.values())


def test_no_endpoint_means_no_event_rows_but_the_signal_still_fires(org, tools, signals):
    m = queued(org, "4242")

    deliver_batch([m.pk], tools)

    assert not Event.objects.exists()
    assert signals == [(m.pk, "sending", "sent")]


def test_an_endpoint_only_gets_the_types_it_subscribed_to(org, tools):
    make_endpoint(org, "http://127.0.0.1:9/hook", events=["message.failed"])

    deliver_batch([queued(org, "4242").pk, queued(org, "404").pk], tools)

    assert list(Event.objects.values_list("type", flat=True)) == ["message.failed"]


def test_an_applied_receipt_is_announced_once_and_a_duplicate_not_again(org, signals):
    make_endpoint(org, "http://127.0.0.1:9/hook")
    integration = org.integrations.get(provider="telegram")
    m = queued(org, "4242")
    Message.objects.filter(pk=m.pk).update(status=MessageStatus.SENT, provider_message_id="p1")
    receipt = Receipt(
        provider="telegram",
        ref=MessageRef(provider_message_id="p1"),
        provider_event_id="d1",
        provider_status="delivered",
        status=MessageStatus.DELIVERED,
    )

    record_receipts([integration], [receipt])
    record_receipts([integration], [receipt])

    assert list(Event.objects.values_list("type", flat=True)) == ["message.delivered"]
    assert signals == [(m.pk, "sent", "delivered")]


def test_rejected_credentials_are_announced_once(org, tools, sandbox_client):
    make_endpoint(org, "http://127.0.0.1:9/hook")
    sandbox_client.reset()  # the bot token is no longer known: 401 Unauthorized

    deliver_batch([queued(org, "4242").pk, queued(org, "4243").pk], tools)

    kinds = list(Event.objects.values_list("type", flat=True))
    assert kinds.count("integration.credentials_rejected") == 1
    assert kinds.count("message.failed") == 2
