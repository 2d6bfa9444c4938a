"""emit/emit_many: one indexed SELECT when nobody listens; rows and on-commit tasks otherwise;
a lost publish is recovered by event_sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.dispatch import receiver as connect
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from shared.events import DELIVER_EVENT, emit, emit_many
from shared.events.models import Event, EventDelivery
from shared.events.signals import message_status_changed
from shared.events.sweeper import event_sweep
from shared.events.types import EVENT_TYPES, message_event_data
from shared.models import Message
from tests.receivers import make_endpoint

pytestmark = pytest.mark.django_db

DATA = {"message_id": 7, "provider": "telegram", "status": "delivered"}


def test_emit_without_endpoints_costs_one_query_and_writes_nothing(cast):
    org = cast["admin"].org
    with CaptureQueriesContext(connection) as queries:
        emit(org.pk, "message.delivered", DATA)
    assert len(queries) == 1
    assert "shared_webhookendpoint" in queries[0]["sql"]
    assert not Event.objects.exists() and not EventDelivery.objects.exists()


def test_emit_many_with_no_subscriber_for_the_types_writes_nothing(cast):
    org = cast["admin"].org
    make_endpoint(org, "http://127.0.0.1:9/hook", events=["booking.synced"])
    with CaptureQueriesContext(connection) as queries:
        emit_many(org.pk, [("message.sent", DATA), ("message.read", DATA)])
    assert len(queries) == 1
    assert not Event.objects.exists()


def test_the_endpoint_query_is_an_index_scan_on_the_organization(cast):
    org = cast["admin"].org
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id, events FROM shared_webhookendpoint "
            "WHERE organization_id = %s AND disabled_at IS NULL",
            [org.pk],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using shared_webhookendpoint_organization_id" in plan, plan
    assert "Index Cond: (organization_id =" in plan, plan


def test_disabled_endpoints_and_other_orgs_get_nothing(cast):
    org, other = cast["admin"].org, cast["outsider"].org
    endpoint, _ = make_endpoint(org, "http://127.0.0.1:9/a")
    endpoint.disabled_at = timezone.now()
    endpoint.save()
    make_endpoint(other, "http://127.0.0.1:9/b")
    emit(org.pk, "message.sent", DATA)
    assert not EventDelivery.objects.exists()


def test_emit_writes_one_delivery_per_subscribed_endpoint_and_publishes_on_commit(
    cast, event_queue, django_capture_on_commit_callbacks
):
    org = cast["admin"].org
    every, _ = make_endpoint(org, "http://127.0.0.1:9/all")
    bookings, _ = make_endpoint(org, "http://127.0.0.1:9/bookings", events=["booking.synced"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with CaptureQueriesContext(connection) as queries:
            emit_many(org.pk, [("message.sent", DATA), ("booking.synced", {"booking_id": "b1"})])
        assert len(queries) == 3  # the SELECT and two INSERTs
        assert event_queue.tasks() == []  # nothing leaves before the commit
    for callback in callbacks:
        callback()
    deliveries = EventDelivery.objects.select_related("event").order_by("pk")
    assert [(d.event.type, d.endpoint_id) for d in deliveries] == [
        ("message.sent", every.pk),
        ("booking.synced", every.pk),
        ("booking.synced", bookings.pk),
    ]
    assert all(d.event.public_id.startswith("evt_") for d in deliveries)
    published = event_queue.tasks()
    assert sorted(published) == [(DELIVER_EVENT, [d.pk]) for d in deliveries]


def test_unknown_event_type_is_a_programming_error(cast):
    with pytest.raises(ValueError, match=r"message\.lost"):
        emit(cast["admin"].org.pk, "message.lost", {})


def test_a_failed_publish_is_recovered_by_the_sweep(
    cast, event_queue, dead_broker, django_capture_on_commit_callbacks
):
    org = cast["admin"].org
    make_endpoint(org, "http://127.0.0.1:9/hook")
    with django_capture_on_commit_callbacks(execute=True):
        emit(org.pk, "message.failed", {**DATA, "status": "failed", "reason": "bounced"})
    delivery = EventDelivery.objects.get()
    assert delivery.enqueued_at is None  # marked unpublished for the sweeper
    assert event_sweep() == [delivery.pk]  # the broker is still down: unpublished again
    delivery.refresh_from_db()
    assert delivery.enqueued_at is None and event_queue.tasks() == []

    dead_broker()  # the broker is back
    assert event_sweep() == [delivery.pk]
    assert event_queue.tasks() == [(DELIVER_EVENT, [delivery.pk])]
    delivery.refresh_from_db()
    assert delivery.enqueued_at is not None


def test_a_delivery_the_broker_lost_is_republished_by_the_sweep(
    cast, event_queue, settings, django_capture_on_commit_callbacks
):
    settings.SWEEPER_GRACE_SECONDS = 0
    org = cast["admin"].org
    make_endpoint(org, "http://127.0.0.1:9/hook")
    with django_capture_on_commit_callbacks(execute=True):
        emit(org.pk, "message.sent", DATA)
    delivery = EventDelivery.objects.get()
    assert event_queue.tasks() == [(DELIVER_EVENT, [delivery.pk])]
    event_queue.clear()  # the broker lost it (a flush)

    assert event_sweep() == [delivery.pk]
    assert event_queue.tasks() == [(DELIVER_EVENT, [delivery.pk])]


def test_the_sweep_takes_expired_leases_and_long_overdue_rows(cast, event_queue):
    org = cast["admin"].org
    endpoint, _ = make_endpoint(org, "http://127.0.0.1:9/hook")
    long_ago = timezone.now() - timedelta(hours=1)
    event = Event.objects.create(
        organization=org, type="message.sent", data={}, created_at=long_ago
    )
    killed = EventDelivery.objects.create(
        event=event, endpoint=endpoint, status="sending", lease_expires_at=long_ago, attempts=1
    )
    lost = EventDelivery.objects.create(
        event=event, endpoint=endpoint, next_attempt_at=long_ago, enqueued_at=long_ago
    )
    fresh = EventDelivery.objects.create(
        event=event, endpoint=endpoint, next_attempt_at=timezone.now(), enqueued_at=timezone.now()
    )
    assert sorted(event_sweep()) == sorted([killed.pk, lost.pk])
    killed.refresh_from_db()
    assert killed.status == "pending" and killed.lease_expires_at is None
    assert (DELIVER_EVENT, [fresh.pk]) not in event_queue.tasks()


def test_sweep_outbox_reports_events_too(cast, event_queue):
    from workers.tasks import sweep_outbox

    assert set(sweep_outbox()) == {"messages", "bookings", "events", "receipts"}


def test_message_status_changed_reaches_receivers_with_its_arguments(cast):
    seen = []

    @connect(message_status_changed)
    def on_change(sender, message, old_status, new_status, **kwargs):
        seen.append((sender, message, old_status, new_status))

    try:
        message = Message(pk=5, provider="telegram", status="delivered")
        message_status_changed.send(
            sender=Message, message=message, old_status="sent", new_status="delivered"
        )
    finally:
        message_status_changed.disconnect(on_change)
    assert seen == [(Message, message, "sent", "delivered")]


def test_message_event_data_carries_ids_status_and_reason_never_the_destination():
    message = Message(
        pk=9,
        provider="sendgrid",
        to="ops@acme.test",
        status="bounced",
        provider_message_id="sg-1",
        error_code="550",
        last_error="Mailbox unavailable",
    )
    data = message_event_data(message)
    assert data == {
        "message_id": 9,
        "idempotency_key": None,
        "provider": "sendgrid",
        "provider_message_id": "sg-1",
        "status": "bounced",
        "error_code": "550",
        "reason": "Mailbox unavailable",
    }
    assert "message.failed" in EVENT_TYPES


def test_cancelling_a_message_announces_message_cancelled(cast):
    from shared.services.messages import message_cancel, send_message
    from tests.factories import connect

    org = connect(cast["admin"], "telegram").org
    make_endpoint(org, "http://127.0.0.1:9/hook", events=["message.cancelled"])
    later = timezone.now() + timedelta(hours=1)
    message = send_message(org, "telegram", "4242", "Reminder", send_at=later)

    message_cancel(organization=org, message_id=message.pk)

    (event,) = Event.objects.all()
    assert event.type == "message.cancelled"
    assert event.data["message_id"] == message.pk and event.data["status"] == "cancelled"
