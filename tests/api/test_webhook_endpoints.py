"""/api/webhook-endpoints/: validation with codes, the secret shown once, rotation, the
delivery log, redelivery, and tenant isolation (admins only)."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.utils import timezone
from standardwebhooks import Webhook

from shared.crypto import decrypt_token
from shared.events import DELIVER_EVENT, emit
from shared.events.delivery import event_deliver
from shared.events.models import EventDelivery, WebhookEndpoint
from shared.models import AuditEvent
from tests.receivers import make_endpoint

pytestmark = pytest.mark.django_db

URL = "/api/webhook-endpoints/"


@pytest.fixture
def admin(cast, client_for):
    return client_for(cast["admin"])


def create(admin, receiver, **body):
    response = admin.post(URL, {"url": receiver.url, **body}, format="json")
    assert response.status_code == 201, response.content
    return response


def test_create_shows_the_secret_once_and_never_again(admin, receiver, caplog, cast):
    caplog.set_level(logging.DEBUG)
    response = create(admin, receiver, events=["message.failed"], description="CRM")
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("whsec_") and len(secret) == 6 + 44
    assert response["Cache-Control"] == "no-store"
    endpoint = body["endpoint"]
    assert endpoint["events"] == ["message.failed"] and endpoint["description"] == "CRM"
    assert endpoint["disabled_at"] is None and endpoint["failing_since"] is None

    emit(cast["admin"].org.pk, "message.failed", {"message_id": 1, "reason": "bounced"})
    delivery = EventDelivery.objects.get()
    event_deliver(delivery_pk=delivery.pk)
    Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)
    later = [
        admin.get(URL),
        admin.get(f"{URL}{endpoint['id']}/"),
        admin.get(f"{URL}{endpoint['id']}/deliveries/"),
        admin.get("/api/audit/"),
    ]
    fragment = secret[6:22]
    for answer in later:
        assert answer.status_code == 200
        assert fragment not in answer.content.decode()
    assert fragment not in caplog.text
    stored = WebhookEndpoint.objects.get()
    assert (
        fragment not in stored.secret_encrypted and decrypt_token(stored.secret_encrypted) == secret
    )
    with connection.cursor() as cursor:  # nothing in the database holds it in clear
        for table in ("shared_webhookendpoint", "shared_auditevent", "shared_eventdelivery"):
            cursor.execute(f"SELECT string_agg(row_to_json(t)::text, '') FROM {table} t")
            assert fragment not in (cursor.fetchone()[0] or ""), table
    assert AuditEvent.objects.filter(action="webhook_endpoint.created").get().token_fingerprint


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "url"),
        ({"url": 42}, "url"),
        ({"url": "x" * 2001}, "url"),
        ({"url": "http://127.0.0.1:9/", "events": ["message.sent", "message.lost"]}, "events.1"),
        ({"url": "http://127.0.0.1:9/", "events": [7]}, "events.0"),
        ({"url": "http://127.0.0.1:9/", "events": "message.sent"}, "events"),
        ({"url": "http://127.0.0.1:9/", "description": "d" * 201}, "description"),
        ({"url": "http://127.0.0.1:9/", "description": 5}, "description"),
    ],
)
def test_invalid_input_is_400_naming_the_field(admin, body, field):
    response = admin.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_failed"
    assert field in response.json()["errors"], response.json()
    assert not WebhookEndpoint.objects.exists()


def test_absent_or_empty_events_mean_every_type_and_duplicates_collapse(admin, receiver):
    assert create(admin, receiver).json()["endpoint"]["events"] == []
    twice = ["booking.failed", "message.sent", "booking.failed"]
    assert create(admin, receiver, events=twice).json()["endpoint"]["events"] == [
        "message.sent",
        "booking.failed",
    ]


def test_the_endpoint_limit_is_409(admin, receiver, settings):
    settings.WEBHOOK_MAX_ENDPOINTS = 1
    create(admin, receiver)
    response = admin.post(URL, {"url": receiver.url}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "webhook_endpoint_limit"


def test_rotation_returns_a_new_secret_once_and_keeps_the_old_one_for_the_grace(
    admin, receiver, settings
):
    settings.WEBHOOK_SECRET_GRACE_SECONDS = 3600
    created = create(admin, receiver).json()
    rotated = admin.post(f"{URL}{created['endpoint']['id']}/rotate-secret/")
    assert rotated.status_code == 200 and rotated["Cache-Control"] == "no-store"
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != created["secret"]
    expires = rotated.json()["endpoint"]["previous_secret_expires_at"]
    assert expires and WebhookEndpoint.objects.get().previous_secret_expires_at > timezone.now()
    shown = admin.get(f"{URL}{created['endpoint']['id']}/").content.decode()
    assert new[6:22] not in shown and created["secret"][6:22] not in shown
    assert AuditEvent.objects.filter(action="webhook_endpoint.secret_rotated").exists()


def test_delete_removes_the_endpoint_and_its_log(admin, receiver, cast):
    endpoint = create(admin, receiver).json()["endpoint"]
    emit(cast["admin"].org.pk, "message.sent", {"message_id": 1})
    response = admin.delete(f"{URL}{endpoint['id']}/")
    assert response.status_code == 200 and response.json()["ok"] is True
    assert not WebhookEndpoint.objects.exists() and not EventDelivery.objects.exists()
    assert admin.get(f"{URL}{endpoint['id']}/").status_code == 404
    assert AuditEvent.objects.filter(action="webhook_endpoint.deleted").exists()


def test_the_delivery_log_is_paginated_newest_first(admin, receiver, cast):
    endpoint = create(admin, receiver).json()["endpoint"]
    for n in range(3):
        emit(cast["admin"].org.pk, "message.sent", {"message_id": n})
    receiver.answer(500, body=b"nope")
    event_deliver(delivery_pk=EventDelivery.objects.order_by("pk").first().pk)
    page = admin.get(f"{URL}{endpoint['id']}/deliveries/?page_size=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    oldest = admin.get(f"{URL}{endpoint['id']}/deliveries/?page=2&page_size=2").json()
    row = oldest["results"][0]
    assert row["event_id"].startswith("evt_") and row["event_type"] == "message.sent"
    assert (row["attempts"], row["last_status_code"], row["last_error"]) == (1, 500, "HTTP 500.")
    assert row["next_attempt_at"] and row["delivered_at"] is None and row["status"] == "pending"


def test_redeliver_requeues_one_delivery_on_commit(
    admin, receiver, cast, event_queue, django_capture_on_commit_callbacks
):
    endpoint = create(admin, receiver).json()["endpoint"]
    emit(cast["admin"].org.pk, "message.sent", {"message_id": 1})
    delivery = EventDelivery.objects.get()
    event_deliver(delivery_pk=delivery.pk)
    event_queue.clear()
    path = f"{URL}{endpoint['id']}/deliveries/{delivery.pk}/redeliver/"
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(path)
    assert response.status_code == 202, response.content
    assert response.json()["delivery"]["status"] == "pending"
    assert event_queue.tasks() == [(DELIVER_EVENT, [delivery.pk])]
    assert event_deliver(delivery_pk=delivery.pk) == "delivered"
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


def test_redeliver_to_a_disabled_endpoint_is_409_and_unknown_ids_404(admin, receiver, cast):
    endpoint = create(admin, receiver).json()["endpoint"]
    emit(cast["admin"].org.pk, "message.sent", {"message_id": 1})
    delivery = EventDelivery.objects.get()
    WebhookEndpoint.objects.update(disabled_at=timezone.now(), disabled_reason="410")
    response = admin.post(f"{URL}{endpoint['id']}/deliveries/{delivery.pk}/redeliver/")
    assert response.status_code == 409 and response.json()["code"] == "webhook_endpoint_disabled"
    other, _ = make_endpoint(cast["admin"].org, receiver.url)
    wrong = admin.post(f"{URL}{other.pk}/deliveries/{delivery.pk}/redeliver/")
    assert wrong.status_code == 404 and wrong.json()["code"] == "not_found"
    huge = admin.get(f"{URL}99999999999999999999999/")
    assert huge.status_code == 404


def test_members_cannot_read_or_write_and_other_orgs_see_404(admin, receiver, cast, client_for):
    endpoint = create(admin, receiver).json()["endpoint"]
    member = client_for(cast["member"])
    for response in (
        member.get(URL),
        member.get(f"{URL}{endpoint['id']}/"),
        member.post(URL, {"url": receiver.url}, format="json"),
        member.post(f"{URL}{endpoint['id']}/rotate-secret/"),
        member.delete(f"{URL}{endpoint['id']}/"),
    ):
        assert response.status_code == 403 and response.json()["code"] == "admin_required"
    outsider = client_for(cast["outsider"])  # an admin of globex, in globex
    assert outsider.get(URL).json() == []
    for response in (
        outsider.get(f"{URL}{endpoint['id']}/"),
        outsider.get(f"{URL}{endpoint['id']}/deliveries/"),
        outsider.post(f"{URL}{endpoint['id']}/rotate-secret/"),
        outsider.delete(f"{URL}{endpoint['id']}/"),
    ):
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert WebhookEndpoint.objects.filter(pk=endpoint["id"]).exists()


def test_read_only_fields_posted_to_create_change_nothing(admin, receiver, cast):
    forged = {
        "url": receiver.url,
        "secret": "whsec_" + "B" * 44,
        "secret_encrypted": "gAAAAAforged",
        "organization": cast["outsider"].org.pk,
        "disabled_at": "2000-01-01T00:00:00Z",
        "failing_since": "2000-01-01T00:00:00Z",
        "id": 999,
    }
    body = admin.post(URL, forged, format="json").json()
    endpoint = WebhookEndpoint.objects.get()
    assert body["secret"] != forged["secret"] and endpoint.pk != 999
    assert endpoint.organization_id == cast["admin"].org.pk
    assert endpoint.disabled_at is None and endpoint.failing_since is None


def test_a_signing_secret_is_redacted_from_any_log_line():
    from shared.events.signing import new_secret
    from shared.redaction import REDACTED, redact

    secret = new_secret()
    assert redact(f"oops {secret} here") == f"oops {REDACTED} here"
