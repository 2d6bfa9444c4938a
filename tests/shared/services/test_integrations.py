"""shared.services.integrations called directly: connect, disconnect, get and tenant isolation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from shared.crypto import decrypt_token, token_fingerprint
from shared.errors import NotFound, ValidationFailed
from shared.models import AuditEvent, Integration, Provider
from shared.services.integrations import (
    integration_connect,
    integration_disconnect,
    integration_get,
    integration_test,
)
from tests.factories import CANARY, VALID_EXTRA, assert_no_canary, make_member

pytestmark = pytest.mark.django_db

NEW_TELEGRAM = "555666777:cnryNewTokenAbcdefghijklmnopqrstuv"


@pytest.fixture
def alice():
    return make_member("acme", "alice", "admin")


@pytest.fixture
def mallory():
    return make_member("globex", "mallory", "admin")


def connect(member, provider="telegram", token=None, extra=None):
    return integration_connect(
        organization=member.org,
        provider=provider,
        token=token or CANARY[provider],
        extra=VALID_EXTRA[provider] if extra is None else extra,
        actor=member.user,
    )


def raw_row(integration: Integration) -> str:
    """Every column of the integration's row as Postgres stores it, as one text."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT row_to_json(i)::text FROM shared_integration i WHERE id = %s", [integration.pk]
        )
        return cursor.fetchone()[0]


def events(org, action):
    return list(AuditEvent.objects.filter(organization=org, action=action).order_by("id"))


# --- connect ----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", Provider.values)
def test_connect_stores_the_token_only_encrypted(alice, provider):
    integration = connect(alice, provider)

    integration.refresh_from_db()
    assert integration.is_active and integration.connected_at is not None
    assert integration.token_encrypted and CANARY[provider] not in integration.token_encrypted
    assert decrypt_token(integration.token_encrypted) == CANARY[provider]
    assert_no_canary(raw_row(integration))  # no column, not even a fragment


def test_connect_writes_one_audit_event_with_a_fingerprint_not_the_token(alice):
    connect(alice)

    [event] = events(alice.org, "integration.connected")
    assert event.provider == "telegram"
    assert event.actor == alice.user
    assert event.token_fingerprint == token_fingerprint(CANARY["telegram"])
    assert event.data == {"created": True}
    assert_no_canary(f"{event.token_fingerprint} {event.data}")


def test_reconnecting_replaces_the_token_and_clears_the_error_state(alice):
    first = connect(alice)
    long_ago = timezone.now() - timedelta(days=3)
    Integration.objects.filter(pk=first.pk).update(
        credentials_rejected_at=long_ago,
        key_unavailable_at=long_ago,
        last_error="Telegram rejected the bot token (401 Unauthorized)",
        last_error_at=long_ago,
        is_active=False,
    )

    again = connect(alice, token=NEW_TELEGRAM)

    again.refresh_from_db()
    assert again.pk == first.pk and Integration.objects.count() == 1
    assert decrypt_token(again.token_encrypted) == NEW_TELEGRAM
    assert again.is_active
    assert again.credentials_rejected_at is None and again.key_unavailable_at is None
    assert (again.last_error, again.last_error_at) == ("", None)
    assert again.connected_at > long_ago
    created = [e.data["created"] for e in events(alice.org, "integration.connected")]
    assert created == [True, False]


def test_connect_normalises_extra(alice):
    integration = connect(alice, "google_calendar", extra={})
    assert integration.extra == {"calendar_id": "primary"}


@pytest.mark.parametrize(
    ("provider", "token", "extra", "field"),
    [
        ("telegram", "", {}, "token"),
        ("telegram", "not a bot token", {}, "token"),
        ("sendgrid", "no-sg-prefix", VALID_EXTRA["sendgrid"], "token"),
        ("sendgrid", CANARY["sendgrid"], {}, "extra.from_email"),
        ("telegram", CANARY["telegram"], {"password": "x"}, "extra.password"),
        ("telegram", CANARY["telegram"], {"colour": "red"}, "extra.colour"),
        ("whatsapp", CANARY["whatsapp"], ["not", "an", "object"], "extra"),
    ],
)
def test_invalid_connect_names_the_field_and_stores_and_audits_nothing(
    alice, provider, token, extra, field
):
    with pytest.raises(ValidationFailed) as caught:
        integration_connect(organization=alice.org, provider=provider, token=token, extra=extra)

    assert field in caught.value.errors
    assert not Integration.objects.exists()
    assert not AuditEvent.objects.exists()
    assert_no_canary(f"{caught.value.message} {caught.value.errors}")


# --- disconnect and get -----------------------------------------------------------------------


def test_disconnect_erases_the_token_keeps_the_row_and_audits(alice):
    connect(alice)

    integration_disconnect(organization=alice.org, provider="telegram", actor=alice.user)

    row = Integration.objects.get()
    assert (row.is_active, row.token_encrypted) == (False, "")
    assert_no_canary(raw_row(row))
    [event] = events(alice.org, "integration.disconnected")
    assert (event.provider, event.actor) == ("telegram", alice.user)
    # The row is still there to read, but a connection test refuses it without calling anyone.
    assert integration_get(organization=alice.org, provider="telegram").pk == row.pk
    with pytest.raises(NotFound):
        integration_test(organization=alice.org, provider="telegram")
    assert events(alice.org, "integration.tested") == []


def test_disconnect_or_get_of_a_provider_never_connected_is_not_found(alice):
    with pytest.raises(NotFound):
        integration_disconnect(organization=alice.org, provider="telegram")
    with pytest.raises(NotFound):
        integration_get(organization=alice.org, provider="telegram")
    assert not AuditEvent.objects.exists()


# --- tenants ----------------------------------------------------------------------------------


def test_another_orgs_integration_is_invisible_and_untouchable(alice, mallory):
    theirs = connect(mallory)

    with pytest.raises(NotFound):
        integration_get(organization=alice.org, provider="telegram")
    with pytest.raises(NotFound):
        integration_disconnect(organization=alice.org, provider="telegram")

    ours = connect(alice, token=NEW_TELEGRAM)
    theirs.refresh_from_db()
    assert ours.pk != theirs.pk
    assert theirs.is_active and decrypt_token(theirs.token_encrypted) == CANARY["telegram"]
    assert len(events(mallory.org, "integration.connected")) == 1
    assert events(mallory.org, "integration.disconnected") == []
