"""Delivering events: Standard Webhooks signatures, retries, Retry-After, 410 and the failure
window disabling an endpoint, rotation grace, bounded reads, metrics."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from shared.events import DELIVER_EVENT, emit
from shared.events.delivery import event_deliver
from shared.events.endpoints import endpoint_rotate_secret
from shared.events.models import EventDelivery, WebhookEndpoint
from shared.models import AuditEvent
from tests.receivers import make_endpoint
from workers.tasks import deliver_event

pytestmark = pytest.mark.django_db

DATA = {"message_id": 42, "provider": "whatsapp", "status": "delivered"}


@pytest.fixture
def queued(cast, receiver, django_capture_on_commit_callbacks):
    """queued(type, data) → the one new EventDelivery to `receiver` (published on commit)."""
    org = cast["admin"].org
    endpoint, secret = make_endpoint(org, receiver.url)

    def make(event_type: str = "message.delivered", data: dict | None = None) -> EventDelivery:
        with django_capture_on_commit_callbacks(execute=True):
            emit(org.pk, event_type, data or DATA)
        return EventDelivery.objects.filter(endpoint=endpoint).select_related("event").first()

    make.endpoint, make.secret = endpoint, secret
    return make


def test_a_delivery_is_signed_and_verifies_with_standardwebhooks(queued, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    delivery = queued()

    assert deliver_event(delivery.pk) == "delivered"

    (got,) = receiver.requests
    payload = Webhook(queued.secret).verify(got.body, got.headers)
    assert payload["id"] == delivery.event.public_id == got.headers["webhook-id"]
    assert payload["type"] == "message.delivered" and payload["data"] == DATA
    assert payload["timestamp"].startswith(str(delivery.event.created_at.year))
    assert got.headers["content-type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        Webhook(queued.secret).verify(got.body.replace(b"42", b"43"), got.headers)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None and delivery.last_response == "ok"
    assert queued.secret not in caplog.text and queued.secret[6:20] not in caplog.text


def test_a_500_is_retried_with_the_same_event_id_until_it_is_delivered(
    queued, receiver, event_queue, django_capture_on_commit_callbacks
):
    receiver.answer(500, body=b"boom")
    delivery = queued()
    event_queue.clear()

    with django_capture_on_commit_callbacks(execute=True):
        assert event_deliver(delivery_pk=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.last_status_code == 500
    assert delivery.last_error == "HTTP 500." and delivery.last_response == "boom"
    delay = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
    assert 4.5 <= delay <= 5.5  # the first step of the schedule, with jitter
    assert event_queue.tasks() == [(DELIVER_EVENT, [delivery.pk])]  # a countdown task
    assert WebhookEndpoint.objects.get().failing_since is not None
    assert event_deliver(delivery_pk=delivery.pk) == "skipped"  # not due yet

    receiver.answer(204)
    EventDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert event_deliver(delivery_pk=delivery.pk) == "delivered"
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    assert WebhookEndpoint.objects.get().failing_since is None  # the streak ended


def test_retry_after_on_429_is_honoured(queued, receiver):
    receiver.answer(429, {"Retry-After": "120"})
    delivery = queued()
    event_deliver(delivery_pk=delivery.pk)
    delivery.refresh_from_db()
    assert 120 <= (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds() < 121


def test_a_long_delay_is_left_to_the_sweeper(
    queued, receiver, event_queue, django_capture_on_commit_callbacks
):
    receiver.answer(503, {"Retry-After": "3600"})
    delivery = queued()
    event_queue.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert event_deliver(delivery_pk=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.enqueued_at is None and event_queue.tasks() == []


def test_out_of_attempts_fails(queued, receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE_SECONDS = (1,)
    receiver.answer(500)
    delivery = queued()
    assert event_deliver(delivery_pk=delivery.pk) == "retry"
    EventDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert event_deliver(delivery_pk=delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 2


def test_410_disables_the_endpoint_and_audits_it(queued, receiver, cast, client_for):
    receiver.answer(410)
    delivery = queued()
    other = queued("booking.synced", {"booking_id": "b-1"})

    assert event_deliver(delivery_pk=delivery.pk) == "disabled"

    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.disabled_at is not None and "410" in endpoint.disabled_reason
    other.refresh_from_db()
    assert other.status == "failed"  # pending deliveries stop with it
    assert AuditEvent.objects.filter(action="webhook_endpoint.disabled").count() == 1
    shown = client_for(cast["admin"]).get(f"/api/webhook-endpoints/{endpoint.pk}/").json()
    assert shown["disabled_at"] and "410" in shown["disabled_reason"]
    emit(cast["admin"].org.pk, "message.sent", DATA)
    assert EventDelivery.objects.count() == 2  # a disabled endpoint gets no new events


def test_an_endpoint_failing_longer_than_the_window_is_disabled(queued, receiver, settings):
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 5 * 86_400
    receiver.answer(500)
    delivery = queued()
    endpoint = queued.endpoint
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(days=4, hours=23)
    )
    assert event_deliver(delivery_pk=delivery.pk) == "retry"
    endpoint.refresh_from_db()
    assert endpoint.disabled_at is None  # inside the window

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(days=5, minutes=1)
    )
    EventDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    event_deliver(delivery_pk=delivery.pk)
    endpoint.refresh_from_db()
    assert endpoint.disabled_at is not None and "Failing continuously" in endpoint.disabled_reason
    assert AuditEvent.objects.filter(action="webhook_endpoint.disabled").exists()


def test_after_rotation_both_secrets_verify_during_the_grace_and_only_the_new_after(
    queued, receiver, cast, settings
):
    old = queued.secret
    _, new = endpoint_rotate_secret(organization=cast["admin"].org, endpoint_id=queued.endpoint.pk)
    delivery = queued()
    event_deliver(delivery_pk=delivery.pk)
    got = receiver.requests[-1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(got.body, got.headers)
    Webhook(new).verify(got.body, got.headers)

    WebhookEndpoint.objects.filter(pk=queued.endpoint.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    second = queued("message.read", {**DATA, "status": "read"})
    event_deliver(delivery_pk=second.pk)
    got = receiver.requests[-1]
    Webhook(new).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(got.body, got.headers)


def test_only_the_first_4_kb_of_an_answer_are_kept(queued, receiver):
    receiver.answer(200, body=b"x" * 100_000)
    delivery = queued()
    event_deliver(delivery_pk=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and len(delivery.last_response) == 4096


def test_an_unreachable_endpoint_is_a_retry_without_details(cast, settings):
    make_endpoint(cast["admin"].org, "http://127.0.0.1:1/hook")
    emit(cast["admin"].org.pk, "message.sent", DATA)
    delivery = EventDelivery.objects.get()
    assert event_deliver(delivery_pk=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.last_error == "Not delivered: ConnectionError." and delivery.attempts == 1


def test_a_timeout_is_a_retry(queued, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    import threading

    release = threading.Event()

    def slow(n):
        release.wait(5)
        return 200, {}, b""

    receiver.reply = slow
    delivery = queued()
    try:
        assert event_deliver(delivery_pk=delivery.pk) == "retry"
    finally:
        release.set()
    delivery.refresh_from_db()
    assert "Timeout" in delivery.last_error


def test_a_duplicate_task_cannot_send_twice(queued, receiver):
    delivery = queued()
    assert event_deliver(delivery_pk=delivery.pk) == "delivered"
    assert event_deliver(delivery_pk=delivery.pk) == "skipped"
    assert len(receiver.requests) == 1


def test_an_expired_lease_is_swept_and_sent_again(queued, receiver, event_queue):
    from shared.events.sweeper import event_sweep

    delivery = queued()
    EventDelivery.objects.filter(pk=delivery.pk).update(
        status="sending", lease_expires_at=timezone.now() - timedelta(seconds=1), attempts=1
    )  # a worker was killed mid-POST
    assert event_sweep() == [delivery.pk]
    assert event_deliver(delivery_pk=delivery.pk) == "delivered"
    delivery.refresh_from_db()
    assert delivery.attempts == 2


def test_task_arguments_are_ids_only(queued, event_queue):
    delivery = queued()
    ((name, args),) = [t for t in event_queue.tasks() if t[1] == [delivery.pk]]
    assert name == DELIVER_EVENT and json.loads(json.dumps(args)) == [delivery.pk]
    assert queued.secret not in str(event_queue.client.lrange("corbi", 0, -1))


def test_metrics_show_outcomes_and_the_oldest_undelivered_age(queued, receiver, client):
    delivery = queued()
    EventDelivery.objects.filter(pk=delivery.pk).update(
        created_at=timezone.now() - timedelta(seconds=90)
    )
    text = client.get("/metrics").content.decode()
    assert 'corbi_event_deliveries{status="pending"} 1.0' in text
    age = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("corbi_event_oldest_undelivered_age_seconds ")
    )
    assert 89 <= age <= 200
    deliver_event(delivery.pk)
    text = client.get("/metrics").content.decode()
    assert 'corbi_event_deliveries{status="pending"} 0.0' in text
    assert 'corbi_event_deliveries_total{outcome="delivered"}' in text
