"""Replacing a token in the Django admin goes through integration_connect, like the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.crypto import decrypt_token, encrypt_token
from shared.models import AuditEvent, Integration, Organization
from tests.factories import CANARY, VALID_EXTRA, assert_no_canary

pytestmark = pytest.mark.django_db

NEW_TOKEN = "555666777:adminReplacedTokAbcdefghijklmnopqrstu"
LONG_AGO = timezone.now() - timedelta(days=30)


@pytest.fixture
def org():
    return Organization.objects.create(slug="acme", name="Acme")


@pytest.fixture
def rejected(org):
    """A telegram integration connected long ago whose credentials the provider rejected."""
    return Integration.objects.create(
        organization=org,
        provider="telegram",
        token_encrypted=encrypt_token(CANARY["telegram"]),
        extra={},
        is_active=True,
        connected_at=LONG_AGO,
        credentials_rejected_at=LONG_AGO,
        last_error="Telegram rejected the bot token (401 Unauthorized)",
        last_error_at=LONG_AGO,
    )


def change_url(row: Integration) -> str:
    return f"/admin/shared/integration/{row.pk}/change/"


def post_form(admin_client, url: str, org: Organization, provider: str, follow=False, **fields):
    form = {
        "organization": org.pk,
        "provider": provider,
        "extra": "{}",
        "is_active": "on",
        **fields,
    }
    return admin_client.post(url, form, follow=follow)


def connected_events(org: Organization) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(organization=org, action="integration.connected"))


def test_replacing_a_token_in_the_admin_records_an_integration_connected_audit_event(
    admin_client, admin_user, org, rejected
):
    response = post_form(admin_client, change_url(rejected), org, "telegram", new_token=NEW_TOKEN)

    assert response.status_code == 302, response.content.decode()[:2000]
    [event] = connected_events(org)
    assert event.provider == "telegram" and event.actor == admin_user
    assert event.token_fingerprint and event.token_fingerprint not in (NEW_TOKEN, "")
    assert event.data == {"created": False}


def test_replacing_a_token_in_the_admin_stamps_connected_at_and_clears_the_rejection(
    admin_client, org, rejected
):
    before = timezone.now()

    post_form(admin_client, change_url(rejected), org, "telegram", new_token=NEW_TOKEN)

    row = Integration.objects.get(pk=rejected.pk)
    assert decrypt_token(row.token_encrypted) == NEW_TOKEN
    assert row.connected_at >= before
    assert row.credentials_rejected_at is None
    assert row.last_error == "" and row.last_error_at is None


def test_adding_an_integration_with_a_token_in_the_admin_is_audited_as_created(admin_client, org):
    response = post_form(
        admin_client,
        "/admin/shared/integration/add/",
        org,
        "sendgrid",
        extra='{"from_email": "noreply@acme.test"}',
        new_token=CANARY["sendgrid"],
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    row = Integration.objects.get(organization=org, provider="sendgrid")
    assert decrypt_token(row.token_encrypted) == CANARY["sendgrid"]
    assert row.is_active and row.connected_at is not None
    assert row.extra == VALID_EXTRA["sendgrid"]
    [event] = connected_events(org)
    assert event.data == {"created": True}


def test_editing_without_a_new_token_keeps_the_token_and_records_no_connection(
    admin_client, org, rejected
):
    response = post_form(
        admin_client, change_url(rejected), org, "telegram", new_token="", is_active=""
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    row = Integration.objects.get(pk=rejected.pk)
    assert decrypt_token(row.token_encrypted) == CANARY["telegram"]
    assert row.is_active is False
    assert row.connected_at == LONG_AGO and row.credentials_rejected_at == LONG_AGO
    assert connected_events(org) == []


def test_the_replaced_token_is_never_rendered_back_by_the_admin(admin_client, org, rejected):
    saved = post_form(
        admin_client, change_url(rejected), org, "telegram", new_token=NEW_TOKEN, follow=True
    )
    row = Integration.objects.get(pk=rejected.pk)
    refused = post_form(
        admin_client, change_url(rejected), org, "telegram", new_token=NEW_TOKEN, extra="[1]"
    )
    pages = [
        saved,
        refused,
        admin_client.get(change_url(rejected)),
        admin_client.get("/admin/shared/integration/"),
        admin_client.get("/admin/shared/auditevent/"),
    ]

    assert refused.status_code == 200 and "errornote" in refused.content.decode()
    for page in pages:
        html = page.content.decode()
        assert NEW_TOKEN not in html and row.token_encrypted not in html
        assert_no_canary(html)


def test_a_token_the_provider_format_refuses_is_a_form_error_and_changes_nothing(
    admin_client, org, rejected
):
    response = post_form(admin_client, change_url(rejected), org, "telegram", new_token="nope")

    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    row = Integration.objects.get(pk=rejected.pk)
    assert decrypt_token(row.token_encrypted) == CANARY["telegram"]
    assert connected_events(org) == []


def test_admin_change_form_replaces_the_token_but_never_shows_it(cast, client_for, admin_client):
    client_for(cast["admin"]).post(
        "/api/integrations/telegram/connect/",
        {"token": CANARY["telegram"], "extra": {}},
        format="json",
    )
    row = Integration.objects.get()
    page = admin_client.get(f"/admin/shared/integration/{row.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "new_token" in html
    assert_no_canary(html)
    assert row.token_encrypted not in html

    response = admin_client.post(
        f"/admin/shared/integration/{row.pk}/change/",
        {
            "organization": row.organization_id,
            "provider": "telegram",
            "extra": "{}",
            "is_active": "on",
            "new_token": "555666777:replacedTokenAbcdefghijklmnopqrstuvw",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row.refresh_from_db()
    assert decrypt_token(row.token_encrypted) == "555666777:replacedTokenAbcdefghijklmnopqrstuvw"
