"""OAuth tokens end to end: two real worker processes syncing bookings through the sandbox
with an expired access token refresh it exactly once; a revoked refresh token stops them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.crypto import encrypt_token
from shared.models import Booking, BookingStatus, Integration
from shared.services.bookings import booking_upsert
from shared.services.integrations import integration_oauth_connect
from tests.factories import BOOKING, OAUTH_CLIENTS, assert_no_canary, make_member, oauth_settings
from tests.workers.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REFRESH = "1//cnryE2eRf7Kd3Lm9Vb5Hj2Ws8Ny4Pt6Zq"
STALE = "ya29.cnryStaleAccessTokenQw3Er5Ty7Ui9Op"
GOOGLE = OAUTH_CLIENTS["google_calendar"]


@pytest.fixture
def calendar(stack, sandbox, sandbox_client, settings):
    """acme's calendar connected through OAuth, its saved access token expired; the workers
    use the same OAuth client settings."""
    oauth_settings(settings, sandbox.url, "http://127.0.0.1:9")
    stack.env.update(
        GOOGLE_OAUTH_CLIENT_ID=GOOGLE["client_id"],
        GOOGLE_OAUTH_CLIENT_SECRET=GOOGLE["client_secret"],
    )
    sandbox_client.add_account(
        "google_calendar",
        refresh_token=REFRESH,
        client_id=GOOGLE["client_id"],
        client_secret=GOOGLE["client_secret"],
    )
    org = make_member("acme", "alice", "admin").org
    integration = integration_oauth_connect(
        organization=org, provider="google_calendar", token=REFRESH, extra={}
    )
    Integration.objects.filter(pk=integration.pk).update(
        access_token_encrypted=encrypt_token(STALE),
        access_token_expires_at=timezone.now() - timedelta(minutes=1),
    )
    return org


def synced(ids):
    def check():
        return (
            not Booking.objects.filter(pk__in=ids)
            .exclude(status__in=[BookingStatus.SYNCED, BookingStatus.FAILED])
            .exists()
        )

    return check


def test_fifty_concurrent_syncs_on_two_workers_make_exactly_one_refresh(
    stack, sandbox_client, calendar
):
    # Every calendar and token call takes 150 ms, so the two processes' tasks overlap.
    sandbox_client.configure(latency_ms=150)
    stack.start_worker("w1", concurrency=8)
    stack.start_worker("w2", concurrency=8)
    sandbox_client.clear_requests()

    ids = [
        booking_upsert(organization=calendar, booking_id=f"bk-{i}", data=BOOKING).pk
        for i in range(50)
    ]
    wait_for(synced(ids), 120, "50 bookings synced")

    assert set(Booking.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"synced"}
    assert len(sandbox_client.token_calls()) == 1, "one refresh for 50 syncs on two workers"
    logs = {name: proc.log_text() for name, proc in stack.procs.items()}
    for name in ("w1", "w2"):
        received = logs[name].count("Task workers.tasks.sync_booking[")
        print(f"{name} received {received} sync_booking task log line(s)")
        assert received, f"{name} synced nothing: the test would prove nothing"
    assert_no_canary(
        "\n".join(logs.values()), {"refresh": REFRESH, "secret": GOOGLE["client_secret"]}
    )


def test_a_revoked_refresh_token_fails_syncs_without_further_calls(stack, sandbox_client, calendar):
    import requests

    requests.post(f"{sandbox_client.base_url}/revoke", data={"token": REFRESH}, timeout=5)
    stack.start_worker("w1", concurrency=4)

    first = booking_upsert(organization=calendar, booking_id="bk-a", data=BOOKING).pk
    wait_for(synced([first]), 60, "first booking final")
    sandbox_client.clear_requests()
    later = [
        booking_upsert(organization=calendar, booking_id=f"bk-{i}", data=BOOKING).pk
        for i in range(5)
    ]
    wait_for(synced(later), 60, "later bookings final")

    assert Integration.objects.get(organization=calendar).needs_reauth_at is not None
    statuses = set(Booking.objects.filter(pk__in=[first, *later]).values_list("status", flat=True))
    assert statuses == {"failed"}
    assert sandbox_client.requests("google_calendar") == []


def test_beat_refreshes_a_token_that_expires_before_its_next_run(stack, sandbox_client, calendar):
    stack.env.update(TOKEN_REFRESH_INTERVAL_SECONDS="1")
    Integration.objects.filter(organization=calendar).update(
        access_token_expires_at=timezone.now() + timedelta(minutes=4)
    )
    stack.start_worker("w1", concurrency=2)
    stack.start_beat()

    wait_for(
        lambda: Integration.objects.get(organization=calendar).token_refreshed_at is not None,
        60,
        "beat's refresh",
    )

    integration = Integration.objects.get(organization=calendar)
    assert integration.access_token_expires_at > timezone.now() + timedelta(minutes=55)
    assert len(sandbox_client.token_calls()) == 1
