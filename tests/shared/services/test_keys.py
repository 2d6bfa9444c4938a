"""A dropped FERNET_KEY is an operator problem: sends are refused with 503, queued work waits."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.utils import timezone

from api.metrics import store
from shared.delivery.batch import message_deliver_batch
from shared.delivery.sweeper import message_sweep
from shared.metrics import Metrics
from shared.models import Booking, BookingStatus, Integration, Message, MessageStatus
from shared.ratelimit import RateLimiter
from shared.services.bookings import booking_sync, booking_upsert
from shared.services.integrations import integration_connect
from tests.factories import CANARY, SANDBOX_ACCOUNTS, assert_no_canary, make_member

pytestmark = pytest.mark.django_db
OTHER_KEY = Fernet.generate_key().decode()
BOOKING = {
    "summary": "Dinner for four",
    "start": "2030-01-01T20:00:00+01:00",
    "end": "2030-01-01T22:00:00+01:00",
}


@pytest.fixture
def tools():
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    prefix = f"test:{uuid.uuid4().hex}:"
    client.delete("corbi")
    yield RateLimiter(client, prefix=prefix + "rl:"), Metrics(client, prefix=prefix + "m:")
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.delete("corbi")


@pytest.fixture
def admin(sandbox, sandbox_client, settings):
    """acme with Telegram and Google Calendar connected under the current key."""
    settings.TELEGRAM_API_BASE = sandbox.url
    settings.GOOGLE_CALENDAR_API_BASE = sandbox.url + "/calendar/v3/"
    settings.GOOGLE_TOKEN_URI = sandbox.url + "/token"
    sandbox_client.configure(telegram_chat_rate=1000, telegram_bot_rate=1000)
    member = make_member("acme", "alice", "admin")
    for provider in ("telegram", "google_calendar"):
        sandbox_client.add_account(provider, **SANDBOX_ACCOUNTS[provider])
        integration_connect(
            organization=member.org, provider=provider, token=CANARY[provider], extra={}
        )
    return member


@pytest.fixture
def drop_key(settings):
    """drop_key() runs with only another key configured; restore() puts the original back."""
    original = list(settings.FERNET_KEYS)

    class Keys:
        def drop(self):
            settings.FERNET_KEYS = [OTHER_KEY]

        def restore(self):
            settings.FERNET_KEYS = original

    return Keys()


def refused(response):
    assert response.status_code == 503, response.content
    text = response.content.decode()
    assert_no_canary(text)
    for key in (*django_settings.FERNET_KEYS, OTHER_KEY):
        assert key not in text
    body = response.json()
    assert body["status"] == "error" and body["ok"] is False
    assert "restore the FERNET_KEY" in body["message"]
    assert body["errors"]["provider"][0].startswith("token_undecryptable")
    return body


def test_new_sends_are_refused_with_503_naming_the_missing_key(admin, drop_key, client_for):
    client = client_for(admin)
    drop_key.drop()

    single = client.post(
        "/api/messages/", {"provider": "telegram", "to": "4242", "body": "hi"}, format="json"
    )
    bulk = client.post(
        "/api/messages/bulk/",
        {"messages": [{"provider": "telegram", "to": "4242", "body": "hi"}]},
        format="json",
    )
    booking = client.put("/api/calendar/bookings/b-1/", BOOKING, format="json")

    refused(single)
    refused(bulk)
    refused(booking)
    assert not Message.objects.exists() and not Booking.objects.exists()


def test_queued_messages_wait_for_the_key_and_are_sent_once_it_returns(
    admin, drop_key, client_for, tools, sandbox_client, settings
):
    settings.SWEEPER_GRACE_SECONDS = 0  # the sweeper's re-check is due at once
    client = client_for(admin)
    created = client.post(
        "/api/messages/", {"provider": "telegram", "to": "4242", "body": "hi"}, format="json"
    )
    pk = created.json()["message_id"]
    drop_key.drop()

    outcome = message_deliver_batch(message_ids=[pk], limiter=tools[0], metrics=tools[1])[pk]

    assert outcome.status == "deferred" and outcome.delay is None  # no tight loop: the sweeper
    message = client.get(f"/api/messages/{pk}/").json()
    assert message["status"] == "queued" and message["error_kind"] == "key_unavailable"
    assert "restore the FERNET_KEY" in message["last_error"]
    assert message["attempts"] == 0 and message["attempt_log"] == []
    integration = client.get("/api/integrations/telegram/").json()
    assert integration["key_unavailable"] is True
    assert integration["credentials_rejected"] is False
    assert Integration.objects.get(provider="telegram").credentials_rejected_at is None
    assert not [r for r in sandbox_client.requests("telegram") if "sendMessage" in r["path"]]

    drop_key.restore()
    assert message_sweep() == [pk]
    with ThreadPoolExecutor(2) as executor:
        message_deliver_batch(
            message_ids=[pk], limiter=tools[0], metrics=tools[1], executor=executor
        )

    row = Message.objects.get(pk=pk)
    assert row.status == MessageStatus.SENT and row.error_kind == "" and row.last_error == ""
    assert client.get("/api/integrations/telegram/").json()["key_unavailable"] is False


def test_a_pending_booking_waits_for_the_key_and_syncs_once_it_returns(
    admin, drop_key, sandbox_client, settings
):
    booking = booking_upsert(organization=admin.org, booking_id="b-2", data=BOOKING)
    drop_key.drop()

    outcome = booking_sync(booking_pk=booking.pk)

    booking.refresh_from_db()
    assert outcome.status == "deferred" and outcome.delay is None
    assert booking.status == BookingStatus.PENDING and booking.attempts == 0
    assert "restore the FERNET_KEY" in booking.last_error
    assert booking.next_attempt_at > timezone.now()
    assert Integration.objects.get(provider="google_calendar").credentials_rejected_at is None

    drop_key.restore()
    Booking.objects.filter(pk=booking.pk).update(next_attempt_at=timezone.now())
    assert booking_sync(booking_pk=booking.pk).status == "sent"
    booking.refresh_from_db()
    assert booking.status == BookingStatus.SYNCED and booking.last_error == ""


def test_health_and_the_integration_show_a_token_found_undecryptable_until_it_decrypts(
    admin, drop_key, client, client_for
):
    store().worker_heartbeat("celery@test-host")
    api = client_for(admin)
    assert client.get("/health/").json()["tokens"] == "ok"
    drop_key.drop()

    refused(
        api.post(
            "/api/messages/", {"provider": "telegram", "to": "4242", "body": "hi"}, format="json"
        )
    )
    refused(api.put("/api/calendar/bookings/b-1/", BOOKING, format="json"))
    body = client.get("/health/").json()
    shown = {i["provider"]: i["key_unavailable"] for i in api.get("/api/integrations/").json()}

    assert body["status"] == "degraded"
    assert "tokens" in body["failing"]
    assert body["tokens"].startswith("error: 2 integration token(s) do not decrypt")
    assert "FERNET_KEY" in body["tokens"]
    assert shown == {"telegram": True, "google_calendar": True}
    assert Integration.objects.filter(credentials_rejected_at__isnull=False).count() == 0
    for key in (*django_settings.FERNET_KEYS, OTHER_KEY):
        assert key not in str(body)

    drop_key.restore()
    sent = api.post(
        "/api/messages/", {"provider": "telegram", "to": "4242", "body": "hi"}, format="json"
    )
    assert sent.status_code == 202, sent.content
    assert client.get("/health/").json()["tokens"].startswith("error: 1 integration token(s)")
    assert api.get("/api/integrations/telegram/").json()["key_unavailable"] is False


def test_rotation_re_encrypts_saved_access_tokens_and_drops_one_no_key_decrypts(settings):
    from datetime import timedelta

    from shared.crypto import decrypt_token
    from shared.services.integrations import integration_oauth_connect
    from shared.services.keys import integration_tokens_rotate

    acme, globex = make_member("acme", "ana", "admin"), make_member("globex", "gil", "admin")
    expiry = timezone.now() + timedelta(hours=1)
    for member in (acme, globex):
        integration_oauth_connect(
            organization=member.org,
            provider="google_calendar",
            token="1//refresh-" + member.org.slug + "-x" * 8,
            extra={},
            access_token="ya29.saved-access-" + member.org.slug + "-y" * 8,
            access_token_expires_at=expiry,
        )
    foreign = Fernet(OTHER_KEY).encrypt(b"ya29.from-a-dropped-key").decode()
    Integration.objects.filter(organization=globex.org).update(access_token_encrypted=foreign)
    settings.FERNET_KEYS = [Fernet.generate_key().decode(), *settings.FERNET_KEYS]

    integration_tokens_rotate()

    kept = Integration.objects.get(organization=acme.org)
    Fernet(settings.FERNET_KEYS[0]).decrypt(kept.access_token_encrypted.encode())  # current key
    assert decrypt_token(kept.access_token_encrypted).startswith("ya29.saved-access-acme")
    dropped = Integration.objects.get(organization=globex.org)
    assert dropped.access_token_encrypted == "" and dropped.access_token_expires_at is None
