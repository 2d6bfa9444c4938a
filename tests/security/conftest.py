"""Security fixtures: two organizations with every provider connected, messages and a booking."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.crypto import encrypt_token
from shared.events.models import Event, EventDelivery, WebhookEndpoint
from shared.events.signing import new_secret
from shared.models import (
    AuditEvent,
    Booking,
    Integration,
    Message,
    MessageAttempt,
    OAuthState,
    Suppression,
)
from shared.services.bookings import booking_event_id
from tests.factories import SANDBOX_ACCOUNTS, connect, oauth_settings, point_providers_at

DESTINATION = {
    "whatsapp": "+14155550100",
    "sendgrid": "ops@acme.test",
    "telegram": "4242",
    "instagram": "1234567890",
}

MODELS = (
    Integration,
    Message,
    MessageAttempt,
    Booking,
    AuditEvent,
    WebhookEndpoint,
    Event,
    EventDelivery,
    Suppression,
    OAuthState,
)
# How each model reaches its organization, when not by `organization`.
ORG_PATH = {MessageAttempt: "message__organization", EventDelivery: "endpoint__organization"}


def register_sandbox_accounts(sandbox_client) -> None:
    sandbox_client.add_accounts([{"provider": p, **a} for p, a in SANDBOX_ACCOUNTS.items()])


def snapshot(organization=None) -> dict[str, list[dict]]:
    """Every row of the models a request could touch (optionally only one organization's)."""
    out = {}
    for model in MODELS:
        queryset = model.objects.all()
        if organization is not None:
            field = ORG_PATH.get(model, "organization")
            queryset = queryset.filter(**{field: organization})
        out[model.__name__] = list(queryset.order_by("pk").values())
    return out


def seed_org(member, tag: str) -> dict:
    """Connect every provider, add a queued and a failed message and a booking for one org."""
    org = member.org
    connect(member, actor=member.user)
    telegram = Integration.objects.get(organization=org, provider="telegram")
    now = timezone.now()
    queued = Message.objects.create(
        organization=org,
        integration=telegram,
        provider="telegram",
        to="4242",
        body=f"queued {tag}",
        next_attempt_at=now + timedelta(days=1),
        enqueued_at=now,
    )
    failed = Message.objects.create(
        organization=org,
        integration=telegram,
        provider="telegram",
        to="4242",
        body=f"failed {tag}",
        status="failed",
        attempts=3,
        last_error="Telegram said no",
        error_kind="permanent",
        failed_at=now,
    )
    booking_id = f"booking-{tag}"
    booking = Booking.objects.create(
        organization=org,
        booking_id=booking_id,
        event_id=booking_event_id(org.pk, booking_id),
        summary=f"Dinner {tag}",
        start=now + timedelta(days=3),
        end=now + timedelta(days=3, hours=2),
        next_attempt_at=now + timedelta(days=1),
    )
    endpoint = WebhookEndpoint.objects.create(
        organization=org,
        url=f"http://127.0.0.1:9/{tag}",
        secret_encrypted=encrypt_token(new_secret()),
    )
    event = Event.objects.create(
        organization=org, type="message.failed", data={"message_id": failed.pk}, created_at=now
    )
    delivery = EventDelivery.objects.create(
        event=event, endpoint=endpoint, status="failed", attempts=10, last_status_code=500
    )
    suppression = Suppression.objects.create(
        organization=org, provider="telegram", recipient="4343", reason="manual"
    )
    return {
        "org": org,
        "suppression": suppression,
        "queued": queued,
        "failed": failed,
        "booking": booking,
        "endpoint": endpoint,
        "delivery": delivery,
    }


@pytest.fixture
def world(cast, sandbox, sandbox_client, settings):
    """acme (admin alice, member bob) and globex (admin mallory), both fully seeded."""
    point_providers_at(settings, sandbox.url)
    oauth_settings(settings, sandbox.url, "http://testserver")
    settings.TEST_CONNECTION_TIMEOUT_SECONDS = 2.0
    register_sandbox_accounts(sandbox_client)
    acme = seed_org(cast["admin"], "acme")
    globex = seed_org(cast["outsider"], "globex")
    sandbox_client.clear_requests()
    return {**cast, "acme": acme, "globex": globex}
