"""A scheduled send through a real worker: sent once its time has come; a cancelled one never."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.models import Message, MessageStatus
from shared.services.integrations import integration_connect
from shared.services.messages import message_cancel, send_message
from tests.factories import CANARY, SANDBOX_ACCOUNTS, VALID_EXTRA, make_member
from tests.workers.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def org(transactional_db):
    return make_member("acme", "alice", "admin").org


def test_a_message_scheduled_two_seconds_ahead_is_sent_after_its_time(stack, sandbox_client, org):
    sandbox_client.add_account("telegram", **SANDBOX_ACCOUNTS["telegram"])
    integration_connect(
        organization=org,
        provider="telegram",
        token=CANARY["telegram"],
        extra=VALID_EXTRA["telegram"],
    )
    stack.start_worker()
    send_at = timezone.now() + timedelta(seconds=2)

    reminder = send_message(org, "telegram", "4242", "Reminder: table at 8", send_at=send_at)
    dropped = send_message(org, "telegram", "4243", "Never mind", send_at=send_at)
    message_cancel(organization=org, message_id=dropped.pk)
    assert reminder.status == MessageStatus.SCHEDULED

    wait_for(
        lambda: Message.objects.filter(pk=reminder.pk, status=MessageStatus.SENT).exists(),
        60,
        "the scheduled message sent",
    )
    sent = [r for r in sandbox_client.requests("telegram") if r["path"].endswith("/sendMessage")]
    assert [r["body"]["chat_id"] for r in sent] == ["4242"]
    assert sent[0]["time"] >= send_at.timestamp()
    dropped.refresh_from_db()
    assert dropped.status == MessageStatus.CANCELLED


def test_a_scheduled_message_survives_a_broker_flush_and_a_worker_kill(
    stack, sandbox_client, broker, org
):
    """Its ETA task is published and then lost twice over (a broker flush, kill -9 of the worker
    holding it): the row is the truth, and the sweeper sends it within one interval of its time."""
    sandbox_client.add_account("telegram", **SANDBOX_ACCOUNTS["telegram"])
    integration_connect(
        organization=org,
        provider="telegram",
        token=CANARY["telegram"],
        extra=VALID_EXTRA["telegram"],
    )
    stack.start_worker()
    send_at = timezone.now() + timedelta(seconds=4)
    reminder = send_message(org, "telegram", "4242", "Reminder: table at 8", send_at=send_at)
    reminder.refresh_from_db()
    assert reminder.status == MessageStatus.SCHEDULED and reminder.enqueued_at is not None

    wait_for(lambda: broker.dbsize() > 0, 10, "the ETA task in the broker")
    broker.flushdb()  # the broker's database: FLUSHALL as the broker sees it, other dbs untouched
    stack.kill("w1")
    stack.start_worker("w2")
    stack.start_beat()

    wait_for(
        lambda: Message.objects.filter(pk=reminder.pk, status=MessageStatus.SENT).exists(),
        60,
        "the scheduled message sent after the flush and the kill",
    )
    sent = [r for r in sandbox_client.requests("telegram") if r["path"].endswith("/sendMessage")]
    assert [r["body"]["chat_id"] for r in sent] == ["4242"]  # once
    interval = float(stack.env["SWEEPER_INTERVAL_SECONDS"])
    assert send_at.timestamp() <= sent[0]["time"] <= send_at.timestamp() + interval + 2.0
