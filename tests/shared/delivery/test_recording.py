"""record_sent: one UPDATE marks a batch sent, each row with its own provider id, and leaves out
the rows whose lease was taken over meanwhile (no event, no signal for those)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from shared.delivery.claims import claim
from shared.delivery.recording import record_sent, release_unsent
from shared.delivery.types import OutcomeStatus, Release, SendRecord
from shared.events.signals import message_status_changed
from shared.models import Message, MessageAttempt, MessageStatus
from tests.shared.delivery.helpers import queued

pytestmark = pytest.mark.django_db


def _claimed(org, count):
    messages = [queued(org, to=str(4300 + n)) for n in range(count)]
    lease = timezone.now() + timedelta(seconds=60)
    assert claim(messages, timezone.now(), lease) == {m.pk for m in messages}
    for message in messages:
        message.refresh_from_db()
    return messages


def test_a_batch_is_marked_sent_in_one_update_each_row_with_its_provider_id(org, tools):
    messages = _claimed(org, 5)
    records = [
        SendRecord(message=m, number=1, started=timezone.now(), provider_id=f"4242:{m.pk}'x")
        for m in messages
    ]
    changed = []

    def on_change(sender, message, old_status, new_status, **kwargs):
        changed.append((message.pk, old_status, new_status))

    message_status_changed.connect(on_change)
    try:
        with CaptureQueriesContext(connection) as queries:
            outcomes = record_sent(records, tools[1])
    finally:
        message_status_changed.disconnect(on_change)

    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1, updates
    assert {pk: o.status for pk, o in outcomes.items()} == {
        m.pk: OutcomeStatus.SENT for m in messages
    }
    for message in messages:
        row = Message.objects.get(pk=message.pk)
        assert row.status == MessageStatus.SENT
        assert row.provider_message_id == f"4242:{message.pk}'x"
        assert row.sent_at is not None and row.lease_expires_at is None
        assert message.status == MessageStatus.SENT  # the in-memory row follows
        assert message.provider_message_id == row.provider_message_id
    assert sorted(changed) == sorted((m.pk, "sending", "sent") for m in messages)
    assert MessageAttempt.objects.filter(message__in=messages, outcome="sent").count() == 5


def test_a_row_whose_lease_was_taken_over_is_left_as_it_is(org, tools, caplog):
    mine, taken = _claimed(org, 2)
    Message.objects.filter(pk=taken.pk).update(status=MessageStatus.QUEUED, lease_expires_at=None)
    records = [
        SendRecord(message=m, number=1, started=timezone.now(), provider_id=f"id-{m.pk}")
        for m in (mine, taken)
    ]
    changed = []

    def on_change(sender, message, **kwargs):
        changed.append(message.pk)

    message_status_changed.connect(on_change)
    try:
        record_sent(records, tools[1])
    finally:
        message_status_changed.disconnect(on_change)

    assert Message.objects.get(pk=mine.pk).status == MessageStatus.SENT
    other = Message.objects.get(pk=taken.pk)
    assert other.status == MessageStatus.QUEUED and other.provider_message_id == ""
    assert changed == [mine.pk]
    assert taken.status == MessageStatus.SENDING  # not announced as sent
    assert "lease had been taken over" in caplog.text


def test_a_provider_id_longer_than_the_column_is_cut(org, tools):
    (message,) = _claimed(org, 1)
    record = SendRecord(message=message, number=1, started=timezone.now(), provider_id="x" * 300)
    record_sent([record], tools[1])
    assert Message.objects.get(pk=message.pk).provider_message_id == "x" * 255


class _Calls:
    """DeliveryMetrics that records its calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


def test_sends_released_past_their_slot_are_counted_in_one_metrics_call(org):
    messages = _claimed(org, 3)
    records = [
        SendRecord(message=m, number=1, started=timezone.now(), released=Release.SLOT)
        for m in messages
    ]
    metrics = _Calls()
    outcomes = release_unsent(records, metrics)
    assert metrics.calls == [("rate_limit_deferred", "telegram", "our_limit", 3)]
    assert {o.status for o in outcomes.values()} == {OutcomeStatus.DEFERRED}
    assert all(m.status == MessageStatus.QUEUED for m in Message.objects.filter(pk__in=outcomes))
