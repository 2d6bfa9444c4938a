"""After connecting, testing, sending and syncing, no token is stored outside the ciphertext."""

from __future__ import annotations

import pytest
from django.db import connection

from shared.delivery.batch import message_deliver
from shared.models import Booking, Message, Provider
from shared.services.bookings import booking_sync
from tests.factories import CANARY, VALID_EXTRA, assert_no_canary, point_providers_at
from tests.security.conftest import DESTINATION, register_sandbox_accounts
from workers.tasks import limiter, metrics

pytestmark = pytest.mark.django_db

# Well-formed tokens the sandbox does not know: every call with them is rejected, so their
# error texts (which for Telegram carry the token in the URL) are written to the DB too.
REJECTED = {p: t.replace("cnry", "rjct") for p, t in CANARY.items()}

CIPHERTEXT = ("shared_integration", "token_encrypted")

TEST_DESTINATION = {
    "whatsapp": {"to_whatsapp": "+14155550100"},
    "sendgrid": {"to_email": "ops@acme.test"},
    "telegram": {"chat_id": "4242"},
}


def dump_database() -> tuple[str, int]:
    """Every column of every table as text, except the ciphertext column; (text, cells)."""
    parts: list[str] = []
    cells = 0
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            columns = [
                c.name for c in connection.introspection.get_table_description(cursor, table)
            ]
            wanted = [c for c in columns if (table, c) != CIPHERTEXT]
            if not wanted:
                continue
            select = ", ".join(f'CAST("{c}" AS TEXT)' for c in wanted)
            cursor.execute(f'SELECT {select} FROM "{table}"')
            for row in cursor.fetchall():
                cells += len(row)
                parts.append(f"{table}: " + " | ".join("" if v is None else str(v) for v in row))
    return "\n".join(parts), cells


def connect_all(client, tokens) -> None:
    for provider in Provider.values:
        body = {"token": tokens[provider], "extra": VALID_EXTRA[provider]}
        response = client.post(f"/api/integrations/{provider}/connect/", body, format="json")
        assert response.status_code == 200, response.content


def exercise(client, org) -> None:
    for provider in Provider.values:
        body = {"extra": TEST_DESTINATION[provider]} if provider in TEST_DESTINATION else {}
        response = client.post(f"/api/integrations/{provider}/test/", body, format="json")
        assert response.status_code == 200, response.content
    for provider, to in DESTINATION.items():
        body = {"provider": provider, "to": to, "body": "Your table is ready"}
        if provider == "sendgrid":
            body["subject"] = "Table"
        response = client.post("/api/messages/", body, format="json")
        assert response.status_code == 202, response.content
    response = client.put(
        "/api/calendar/bookings/b-1/",
        {"summary": "Dinner", "start": "2030-01-01T20:00:00Z", "end": "2030-01-01T21:00:00Z"},
        format="json",
    )
    assert response.status_code == 202, response.content
    for message in Message.objects.filter(organization=org):
        message_deliver(message_id=message.pk, limiter=limiter(), metrics=metrics())
    for booking in Booking.objects.filter(organization=org):
        booking_sync(booking_pk=booking.pk)


def test_no_token_is_stored_outside_the_ciphertext(
    cast, client_for, sandbox, sandbox_client, settings
):
    point_providers_at(settings, sandbox.url)
    register_sandbox_accounts(sandbox_client)
    sandbox_client.configure(telegram_chat_rate=1000)
    settings.TELEGRAM_CHAT_RATE = 1000.0
    acme = client_for(cast["admin"])
    globex = client_for(cast["outsider"])
    connect_all(acme, CANARY)
    connect_all(globex, REJECTED)
    exercise(acme, cast["admin"].org)
    exercise(globex, cast["outsider"].org)

    sent = Message.objects.filter(organization=cast["admin"].org, status="sent").count()
    assert sent == len(DESTINATION), list(Message.objects.values("status", "last_error"))
    assert Booking.objects.get(organization=cast["admin"].org).status == "synced"
    rejected = Message.objects.filter(organization=cast["outsider"].org).exclude(status="sent")
    assert rejected.count() == len(DESTINATION)

    text, cells = dump_database()
    assert cells > 100
    assert_no_canary(text, CANARY)
    assert_no_canary(text, REJECTED)
