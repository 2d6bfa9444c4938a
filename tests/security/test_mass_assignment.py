"""Read-only fields posted to connect, messages, bulk and bookings change nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.crypto import decrypt_token
from shared.models import Booking, Integration, Message
from shared.services.bookings import booking_event_id
from tests.factories import CANARY, VALID_EXTRA
from tests.security.conftest import snapshot

pytestmark = pytest.mark.django_db

NEW_TOKEN = "111222333:mAsSaSsIgNmEnTtOkEnXyZ"


def forged(world) -> dict:
    """Every read-only field a client might try to set, pointing at the other org where it can."""
    globex = world["globex"]
    return {
        "organization": globex["org"].pk,
        "organization_id": globex["org"].pk,
        "org": globex["org"].pk,
        "id": globex["queued"].pk,
        "pk": globex["queued"].pk,
        "status": "sent",
        "provider_message_id": "SMforged",
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
        "attempts": 7,
        "is_active": False,
        "token_encrypted": "gAAAAAforged",
        "event_id": "forgedeventid",
        "version": 99,
        "synced_version": 99,
        "integration": globex["queued"].integration_id,
        "integration_id": globex["queued"].integration_id,
    }


def recent(value) -> bool:
    return timezone.now() - value < timedelta(minutes=5)


def test_connect_ignores_read_only_fields(world, client_for):
    acme, globex = world["acme"]["org"], world["globex"]["org"]
    before_globex = snapshot(globex)
    body = {"token": NEW_TOKEN, "extra": VALID_EXTRA["telegram"], **forged(world)}
    response = client_for(world["admin"]).post(
        "/api/integrations/telegram/connect/", body, format="json"
    )
    assert response.status_code in (200, 400), response.content
    assert snapshot(globex) == before_globex
    integration = Integration.objects.get(organization=acme, provider="telegram")
    assert integration.is_active is True
    assert integration.token_encrypted != "gAAAAAforged"
    expected = NEW_TOKEN if response.status_code == 200 else CANARY["telegram"]
    assert decrypt_token(integration.token_encrypted) == expected
    assert recent(integration.created_at)
    assert Integration.objects.filter(provider="telegram").count() == 2


def test_connect_with_read_only_keys_in_extra_changes_no_column(world, client_for):
    acme = world["acme"]["org"]
    for key in ("organization", "is_active", "token_encrypted", "id"):
        response = client_for(world["admin"]).post(
            "/api/integrations/telegram/connect/",
            {"token": NEW_TOKEN, "extra": {key: 1}},
            format="json",
        )
        integration = Integration.objects.get(organization=acme, provider="telegram")
        if response.status_code == 200:
            # Stored as configuration only: it must not have changed the row itself.
            assert integration.organization_id == acme.pk and integration.is_active is True
        else:
            assert response.status_code == 400, response.content


def assert_fresh_message(message: Message, acme) -> None:
    assert message.organization_id == acme.pk
    assert message.integration.organization_id == acme.pk
    assert message.status == "queued"
    assert message.provider_message_id == ""
    assert message.attempts == 0
    assert recent(message.created_at)


def test_message_create_ignores_read_only_fields(world, client_for):
    acme, globex = world["acme"]["org"], world["globex"]["org"]
    before_globex = snapshot(globex)
    body = {"provider": "telegram", "to": "4242", "body": "hi", **forged(world)}
    response = client_for(world["member"]).post("/api/messages/", body, format="json")
    assert response.status_code in (202, 400), response.content
    assert snapshot(globex) == before_globex
    if response.status_code == 202:
        message = Message.objects.get(pk=response.json()["message_id"])
        assert message.pk != world["globex"]["queued"].pk
        assert_fresh_message(message, acme)


def test_bulk_create_ignores_read_only_fields(world, client_for):
    acme, globex = world["acme"]["org"], world["globex"]["org"]
    before_globex = snapshot(globex)
    item = {"provider": "telegram", "to": "4242", "body": "hi", **forged(world)}
    body = {"messages": [item, {**item, "body": "two"}], **forged(world)}
    response = client_for(world["member"]).post("/api/messages/bulk/", body, format="json")
    assert response.status_code in (202, 400), response.content
    assert snapshot(globex) == before_globex
    if response.status_code == 202:
        ids = [m["id"] for m in response.json()["messages"]]
        assert len(ids) == 2
        for message in Message.objects.filter(pk__in=ids):
            assert_fresh_message(message, acme)


def test_booking_create_ignores_read_only_fields(world, client_for):
    acme, globex = world["acme"]["org"], world["globex"]["org"]
    before_globex = snapshot(globex)
    body = {
        "summary": "Lunch",
        "start": "2030-01-01T12:00:00+00:00",
        "end": "2030-01-01T13:00:00+00:00",
        **forged(world),
    }
    response = client_for(world["member"]).put(
        "/api/calendar/bookings/new-one/", body, format="json"
    )
    assert response.status_code in (202, 400), response.content
    assert snapshot(globex) == before_globex
    if response.status_code == 202:
        booking = Booking.objects.get(organization=acme, booking_id="new-one")
        assert booking.event_id == booking_event_id(acme.pk, "new-one")
        assert (booking.version, booking.synced_version, booking.attempts) == (1, 0, 0)
        assert booking.status == "pending"
        assert recent(booking.created_at)


def test_booking_update_ignores_read_only_fields(world, client_for):
    acme, globex = world["acme"]["org"], world["globex"]["org"]
    booking = world["acme"]["booking"]
    before_globex = snapshot(globex)
    body = {
        "summary": "Moved",
        "start": "2030-01-02T12:00:00+00:00",
        "end": "2030-01-02T13:00:00+00:00",
        **forged(world),
    }
    response = client_for(world["member"]).put(
        f"/api/calendar/bookings/{booking.booking_id}/", body, format="json"
    )
    assert response.status_code in (202, 400), response.content
    assert snapshot(globex) == before_globex
    after = Booking.objects.get(pk=booking.pk)
    assert after.organization_id == acme.pk
    assert after.event_id == booking.event_id
    assert after.synced_version == booking.synced_version
    assert after.version in (booking.version, booking.version + 1)
    assert after.created_at == booking.created_at
    assert after.status != "synced"
