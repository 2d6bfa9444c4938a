"""shared.services.tokens: saved access tokens, one locked refresh per integration, expiry in a
batch, needs_reauth, the beat refresh and revocation at disconnect, against the sandbox."""

from __future__ import annotations

import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.db import connections
from django.utils import timezone

from shared.crypto import decrypt_token, encrypt_token
from shared.events.models import Event, WebhookEndpoint
from shared.events.signing import new_secret
from shared.models import AuditEvent, Booking, Integration
from shared.services.bookings import booking_sync, booking_upsert
from shared.services.integrations import (
    integration_connect,
    integration_disconnect,
    integration_oauth_connect,
)
from shared.services.tokens import (
    google_access_token_refresh,
    instagram_oauth_client,
    tokens_refresh_due,
)
from tests.factories import (
    BOOKING,
    CANARY,
    OAUTH_CLIENTS,
    SANDBOX_ACCOUNTS,
    VALID_EXTRA,
    assert_no_canary,
    oauth_settings,
    register_oauth_accounts,
)

REFRESH = "1//cnryRfQx5Kd8Lm2Vb7Hj4Ws9Ny3Pt6Zc"
GOOGLE = OAUTH_CLIENTS["google_calendar"]


@pytest.fixture
def env(settings, sandbox, sandbox_client):
    oauth_settings(settings, sandbox.url, "http://127.0.0.1:9")
    register_oauth_accounts(sandbox_client)
    # A Google user of the deployment's client whose refresh token the tests know.
    sandbox_client.add_account(
        "google_calendar",
        refresh_token=REFRESH,
        client_id=GOOGLE["client_id"],
        client_secret=GOOGLE["client_secret"],
        email="bea@sandbox.test",
    )
    return sandbox


def google(member, refresh: str = REFRESH) -> Integration:
    return integration_oauth_connect(
        organization=member.org, provider="google_calendar", token=refresh, extra={}
    )


def sync(member, count: int, start: int = 0) -> list[Booking]:
    bookings = [
        booking_upsert(organization=member.org, booking_id=f"b-{start + i}", data=BOOKING)
        for i in range(count)
    ]
    for booking in bookings:
        booking_sync(booking_pk=booking.pk)
    return list(Booking.objects.filter(pk__in=[b.pk for b in bookings]))


def endpoint(member) -> None:
    WebhookEndpoint.objects.create(
        organization=member.org,
        url="http://127.0.0.1:9/h",
        secret_encrypted=encrypt_token(new_secret()),
    )


# --- saved access tokens -------------------------------------------------------------------------


@pytest.mark.django_db
def test_syncs_reuse_the_saved_access_token_instead_of_refreshing_per_task(
    env, cast, sandbox_client
):
    integration = google(cast["admin"])

    synced = sync(cast["admin"], 4)

    assert {b.status for b in synced} == {"synced"}
    assert len(sandbox_client.token_calls()) == 1
    integration.refresh_from_db()
    assert decrypt_token(integration.access_token_encrypted).startswith("ya29.")
    assert integration.access_token_expires_at > timezone.now() + timedelta(minutes=55)


@pytest.mark.django_db
def test_a_pasted_authorized_user_json_also_saves_its_refreshed_token(env, cast, sandbox_client):
    import json

    token = json.dumps(
        {
            "refresh_token": REFRESH,
            "client_id": GOOGLE["client_id"],
            "client_secret": GOOGLE["client_secret"],
        }
    )
    integration_connect(
        organization=cast["admin"].org, provider="google_calendar", token=token, extra={}
    )

    assert {b.status for b in sync(cast["admin"], 3)} == {"synced"}

    assert len(sandbox_client.token_calls()) == 1
    assert Integration.objects.get(provider="google_calendar").access_token_encrypted


@pytest.mark.django_db
def test_an_expired_saved_token_is_refreshed_once(env, cast, sandbox_client):
    google(cast["admin"])
    sync(cast["admin"], 1)
    Integration.objects.update(access_token_expires_at=timezone.now() - timedelta(seconds=1))

    assert {b.status for b in sync(cast["admin"], 3, start=10)} == {"synced"}

    assert len(sandbox_client.token_calls()) == 2


@pytest.mark.django_db
def test_a_token_that_expires_during_a_batch_is_refreshed_once_and_the_call_retried(
    env, cast, sandbox_client
):
    google(cast["admin"])
    sync(cast["admin"], 1)
    assert sandbox_client.google_expire_tokens() >= 1  # Google's clock: expired, ours: not yet

    synced = sync(cast["admin"], 4, start=10)

    assert {b.status for b in synced} == {"synced"}
    assert len(sandbox_client.token_calls()) == 2  # the 401 cost one refresh, not one per sync
    statuses = [
        r["status"] for r in sandbox_client.requests("google_calendar") if "/events" in r["path"]
    ]
    assert statuses.count(401) == 1


@pytest.mark.django_db(transaction=True)
def test_many_threads_needing_a_token_at_once_make_one_refresh(env, cast, sandbox_client):
    integration = google(cast["admin"])
    tokens: list[str] = []
    barrier = threading.Barrier(12)

    def worker() -> None:
        try:
            barrier.wait()
            tokens.append(google_access_token_refresh(integration_pk=integration.pk, stale=None)[0])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(tokens) == 12 and len(set(tokens)) == 1
    assert len(sandbox_client.token_calls()) == 1


# --- needs_reauth ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_revoked_refresh_token_moves_to_needs_reauth_and_stops_provider_calls(
    env, cast, sandbox_client, client_for
):
    endpoint(cast["admin"])
    google(cast["admin"])
    sync(cast["admin"], 1)
    requests.post(f"{env.url}/revoke", data={"token": REFRESH}, timeout=5).raise_for_status()
    Integration.objects.update(access_token_expires_at=timezone.now() - timedelta(seconds=1))

    [failed] = sync(cast["admin"], 1, start=10)

    assert failed.status == "failed" and "invalid_grant" in failed.last_error
    integration = Integration.objects.get(provider="google_calendar")
    assert integration.needs_reauth_at is not None and integration.credentials_rejected_at
    assert not integration.access_token_encrypted
    event = Event.objects.get(type="integration.credentials_rejected")
    assert event.data["provider"] == "google_calendar" and event.data["code"] == "invalid_grant"
    assert AuditEvent.objects.filter(
        action="integration.credentials_rejected", data__status="needs_reauth"
    ).exists()
    shown = client_for(cast["member"]).get("/api/integrations/google_calendar/").json()
    assert shown["status"] == "needs_reauth" and "invalid_grant" in shown["status_reason"]

    sandbox_client.clear_requests()
    [later] = sync(cast["admin"], 1, start=20)

    assert later.status == "failed" and "connected again" in later.last_error
    assert sandbox_client.requests("google_calendar") == []  # no further provider calls
    assert Event.objects.filter(type="integration.credentials_rejected").count() == 1


@pytest.mark.django_db
def test_connecting_again_clears_needs_reauth(env, cast):
    google(cast["admin"])
    Integration.objects.update(needs_reauth_at=timezone.now(), needs_reauth_reason="revoked")

    integration = google(cast["admin"])

    assert integration.needs_reauth_at is None and integration.needs_reauth_reason == ""


# --- beat ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_beat_refreshes_only_the_google_tokens_expiring_before_its_next_run(
    env, cast, sandbox_client, settings
):
    settings.TOKEN_REFRESH_INTERVAL_SECONDS = 300
    soon, later = google(cast["admin"]), google(cast["outsider"])
    now = timezone.now()
    for row, left in ((soon, timedelta(minutes=6)), (later, timedelta(minutes=50))):
        Integration.objects.filter(pk=row.pk).update(
            access_token_encrypted=encrypt_token("ya29.old-" + "x" * 20),
            access_token_expires_at=now + left,
        )

    counts = tokens_refresh_due()

    assert counts == {"google_calendar": 1, "instagram": 0, "failed": 0}
    assert len(sandbox_client.token_calls()) == 1
    soon.refresh_from_db()
    assert soon.access_token_expires_at > now + timedelta(minutes=55)


def instagram_grant(sandbox_url: str) -> None:
    """Consent in the sandbox (no browser needed: read the redirect) and keep the code."""
    client = instagram_oauth_client()
    url = client.authorization_url(state="s")
    answer = requests.get(url, allow_redirects=False, timeout=5)
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    return client.long_lived(client.exchange(code=code))


@pytest.mark.django_db
def test_beat_renews_an_instagram_token_near_its_expiry(env, cast, sandbox_client, settings):
    sandbox_client.configure(instagram_refresh_min_age_seconds=0)
    issued = instagram_grant(env.url)
    integration = integration_oauth_connect(
        organization=cast["admin"].org,
        provider="instagram",
        token=issued.access_token,
        extra={"instagram_scoped_id": OAUTH_CLIENTS["instagram"]["ig_id"]},
        token_expires_at=timezone.now() + timedelta(days=3),
    )
    Integration.objects.filter(pk=integration.pk).update(
        connected_at=timezone.now() - timedelta(days=2)
    )

    assert tokens_refresh_due()["instagram"] == 1
    assert tokens_refresh_due()["instagram"] == 0  # renewed: not due any more

    integration.refresh_from_db()
    assert decrypt_token(integration.token_encrypted) != issued.access_token
    assert integration.token_expires_at > timezone.now() + timedelta(days=59)
    refreshes = [
        r for r in sandbox_client.requests("instagram") if r["path"] == "/refresh_access_token"
    ]
    assert len(refreshes) == 1


@pytest.mark.django_db
def test_a_refused_instagram_refresh_moves_to_needs_reauth(env, cast, sandbox_client):
    sandbox_client.configure(instagram_refresh_min_age_seconds=0)
    issued = instagram_grant(env.url)
    integration_oauth_connect(
        organization=cast["admin"].org,
        provider="instagram",
        token=issued.access_token,
        extra={"instagram_scoped_id": OAUTH_CLIENTS["instagram"]["ig_id"]},
        token_expires_at=timezone.now() + timedelta(days=3),
    )
    Integration.objects.update(connected_at=timezone.now() - timedelta(days=2))
    assert instagram_oauth_client().revoke(issued.access_token)

    assert tokens_refresh_due()["failed"] == 1

    integration = Integration.objects.get(provider="instagram")
    assert integration.needs_reauth_at is not None and "190" in integration.needs_reauth_reason


# --- disconnect ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_disconnect_revokes_the_google_token_at_the_sandbox_then_erases_it(
    env, cast, sandbox_client
):
    google(cast["admin"])
    sync(cast["admin"], 1)

    integration = integration_disconnect(organization=cast["admin"].org, provider="google_calendar")

    [revoke] = [r for r in sandbox_client.requests("google_calendar") if r["path"] == "/revoke"]
    assert revoke["body"]["token"] == REFRESH and revoke["status"] == 200
    assert not integration.token_encrypted and not integration.access_token_encrypted
    audit = AuditEvent.objects.get(action="integration.disconnected")
    assert audit.data == {"revoked_at_provider": True}
    refused = requests.post(
        f"{env.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": REFRESH, "client_id": GOOGLE["client_id"],
              "client_secret": GOOGLE["client_secret"]},
        timeout=5,
    )  # fmt: skip
    assert refused.json()["error"] == "invalid_grant"


@pytest.mark.django_db
def test_disconnect_revokes_the_instagram_token_with_a_permission_delete(env, cast, sandbox_client):
    issued = instagram_grant(env.url)
    integration_oauth_connect(
        organization=cast["admin"].org,
        provider="instagram",
        token=issued.access_token,
        extra={"instagram_scoped_id": OAUTH_CLIENTS["instagram"]["ig_id"]},
        token_expires_at=issued.expiry,
    )

    integration_disconnect(organization=cast["admin"].org, provider="instagram")

    [delete] = [r for r in sandbox_client.requests("instagram") if r["method"] == "DELETE"]
    assert delete["path"] == "/v23.0/me/permissions" and delete["outcome"] == "revoked"
    me = requests.get(
        f"{env.url}/v23.0/me", headers={"Authorization": f"Bearer {issued.access_token}"}, timeout=5
    )
    assert me.json()["error"]["code"] == 190


@pytest.mark.django_db
def test_disconnect_of_a_pasted_token_revokes_nothing(env, cast, sandbox_client):
    sandbox_client.add_account("google_calendar", **SANDBOX_ACCOUNTS["google_calendar"])
    integration_connect(
        organization=cast["admin"].org,
        provider="google_calendar",
        token=CANARY["google_calendar"],
        extra=VALID_EXTRA["google_calendar"],
    )
    sandbox_client.clear_requests()

    integration_disconnect(organization=cast["admin"].org, provider="google_calendar")

    assert sandbox_client.requests() == []
    assert AuditEvent.objects.get(action="integration.disconnected").data == {}


@pytest.mark.django_db
def test_no_token_appears_in_events_audit_or_errors(env, cast, sandbox_client, caplog):
    endpoint(cast["admin"])
    google(cast["admin"])
    sync(cast["admin"], 2)
    access = decrypt_token(Integration.objects.get().access_token_encrypted)
    requests.post(f"{env.url}/revoke", data={"token": REFRESH}, timeout=5)
    Integration.objects.update(access_token_expires_at=timezone.now() - timedelta(seconds=1))
    sync(cast["admin"], 1, start=5)

    stored = str(list(Event.objects.values())) + str(list(AuditEvent.objects.values()))
    stored += str(list(Booking.objects.values("last_error")))
    tokens = {"refresh": REFRESH, "access": access, "secret": GOOGLE["client_secret"]}
    assert_no_canary(stored + caplog.text, tokens)


@pytest.mark.django_db
def test_instagram_sends_stop_calling_the_provider_once_it_needs_reauth(
    env, cast, sandbox_client, tools
):
    from shared.delivery.batch import message_deliver
    from shared.services.messages import send_message

    limiter, metrics = tools
    sandbox_client.configure(instagram_refresh_min_age_seconds=0)
    issued = instagram_grant(env.url)
    integration_oauth_connect(
        organization=cast["admin"].org,
        provider="instagram",
        token=issued.access_token,
        extra={"instagram_scoped_id": OAUTH_CLIENTS["instagram"]["ig_id"]},
        token_expires_at=timezone.now() + timedelta(days=3),
    )
    Integration.objects.update(connected_at=timezone.now() - timedelta(days=2))
    instagram_oauth_client().revoke(issued.access_token)
    tokens_refresh_due()
    sandbox_client.clear_requests()

    message = send_message(cast["admin"].org, "instagram", "1234567890", "hello")
    message_deliver(message_id=message.pk, limiter=limiter, metrics=metrics)

    message.refresh_from_db()
    assert message.status == "failed" and message.error_kind == "credentials"
    assert sandbox_client.requests("instagram") == []
