"""The OAuth flows leave no token, code, verifier or client secret anywhere but the ciphertext
columns: not in a response, a log line, an event, an audit row, a task argument or the DB."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote

import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.db import connection

from shared.crypto import decrypt_token, encrypt_token
from shared.events.models import WebhookEndpoint
from shared.events.signing import new_secret
from shared.models import Booking, Integration
from shared.services.bookings import booking_sync
from tests.factories import OAUTH_CLIENTS, fragments, oauth_settings, register_oauth_accounts

pytestmark = pytest.mark.django_db(transaction=True)

# Fernet ciphertext columns: the only place a secret may be (encrypted).
CIPHERTEXT = {
    ("shared_integration", "token_encrypted"),
    ("shared_integration", "access_token_encrypted"),
    ("shared_oauthstate", "verifier_encrypted"),
    ("shared_webhookendpoint", "secret_encrypted"),
    ("shared_webhookendpoint", "previous_secret_encrypted"),
}


def dump_database() -> str:
    parts: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            columns = [
                c.name for c in connection.introspection.get_table_description(cursor, table)
            ]
            wanted = [c for c in columns if (table, c) not in CIPHERTEXT]
            if not wanted:
                continue
            select = ", ".join(f'CAST("{c}" AS TEXT)' for c in wanted)
            cursor.execute(f'SELECT {select} FROM "{table}"')
            parts.extend(f"{table}: {row}" for row in cursor.fetchall())
    return "\n".join(parts)


def broker_payloads() -> str:
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    out = []
    for raw in client.lrange("corbi", 0, -1):
        envelope = json.loads(raw)
        out.append(json.dumps(envelope))
        out.append(base64.b64decode(envelope["body"]).decode(errors="replace"))
    return "\n".join(out)


def forms(value: str) -> list[str]:
    """The secret as sent and as it would appear percent- or base64-encoded."""
    return [value, quote(value, safe=""), base64.b64encode(value.encode()).decode()]


def test_no_oauth_secret_is_anywhere_but_the_ciphertext(
    settings, live_server, sandbox, sandbox_client, cast, caplog
):
    caplog.set_level(logging.DEBUG)
    oauth_settings(settings, sandbox.url, live_server.url)
    register_oauth_accounts(sandbox_client)
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete("corbi")
    admin = cast["admin"]
    WebhookEndpoint.objects.create(
        organization=admin.org,
        url="http://127.0.0.1:9/h",
        secret_encrypted=encrypt_token(new_secret()),
    )
    session = requests.Session()
    session.trust_env = False
    session.headers.update({"Authorization": f"Token {admin.token}", "X-Org-ID": str(admin.org.pk)})
    seen: list[str] = []
    for provider in ("google_calendar", "instagram"):
        started = session.post(
            f"{live_server.url}/api/integrations/{provider}/oauth/start/", json={}, timeout=10
        )
        final = session.get(started.json()["authorization_url"], timeout=20)
        assert final.status_code == 200, final.text
        seen += [started.text, str(started.headers), final.text, str(final.headers)]
        # Our answers only: the provider's own redirect carries the code to the browser.
        ours = [r for r in final.history if r.url.startswith(live_server.url)]
        seen += [f"{r.status_code} {r.headers} {r.text}" for r in ours]
    for booking_id in ("b-1", "b-2"):
        put = session.put(
            f"{live_server.url}/api/calendar/bookings/{booking_id}/",
            json={
                "summary": "Dinner",
                "start": "2030-01-01T20:00:00Z",
                "end": "2030-01-01T21:00:00Z",
            },
            timeout=10,
        )
        assert put.status_code == 202, put.text
        seen.append(put.text)
    payloads = broker_payloads()
    for booking in Booking.objects.all():
        booking_sync(booking_pk=booking.pk)
    assert set(Booking.objects.values_list("status", flat=True)) == {"synced"}
    seen.append(session.get(f"{live_server.url}/api/integrations/", timeout=10).text)
    seen.append(session.get(f"{live_server.url}/api/audit/", timeout=10).text)

    secrets: dict[str, str] = {
        "google client secret": OAUTH_CLIENTS["google_calendar"]["client_secret"],
        "instagram app secret": OAUTH_CLIENTS["instagram"]["app_secret"],
    }
    for row in Integration.objects.all():
        secrets[f"{row.provider} token"] = decrypt_token(row.token_encrypted)
        if row.access_token_encrypted:
            secrets[f"{row.provider} access token"] = decrypt_token(row.access_token_encrypted)
    for record in sandbox_client.requests():
        for source in (
            record["body"] if isinstance(record["body"], dict) else {},
            record["query_params"],
        ):
            for name in ("code", "code_verifier", "access_token", "refresh_token"):
                if isinstance(source.get(name), str) and len(source[name]) >= 16:
                    secrets[f"{record['path']} {name}"] = source[name]
    assert {
        "google_calendar token",
        "/token code",
        "/token code_verifier",
        "/oauth/access_token code",
    } <= set(secrets)

    haystack = "\n".join([*seen, caplog.text, dump_database(), payloads])
    for label, secret in secrets.items():
        for form in forms(secret):
            for fragment in fragments(form, 12):
                assert fragment not in haystack, f"{label} leaked ({fragment!r})"
