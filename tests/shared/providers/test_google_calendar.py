"""GoogleCalendar against the sandbox's Calendar v3 API and OAuth token endpoint."""

from __future__ import annotations

import json

import pytest
import requests

from shared.providers import ProviderError
from shared.providers.google_calendar import GoogleCalendar

ACCESS = "ya29.CANARYgoogleACCESStokenabcdefghijkl"
REFRESH = "1//CANARYgoogleREFRESHtokenabcdefghijkl"
CLIENT_ID = "corbi-client.apps.googleusercontent.com"
CLIENT_SECRET = "CANARYgoogleCLIENTsecret"
EVENT = {
    "summary": "Haircut",
    "description": "Booking via Corbi",
    "location": "Main St 1",
    "start": {"dateTime": "2030-01-01T10:00:00Z"},
    "end": {"dateTime": "2030-01-01T11:00:00Z"},
    "attendees": [{"email": "client@example.test"}],
}


@pytest.fixture
def account(sandbox_client):
    sandbox_client.add_account(
        "google_calendar",
        access_token=ACCESS,
        refresh_token=REFRESH,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        calendars=["primary"],
    )


def adapter(base_url: str, *, token: str = ACCESS, timeout: float = 5.0) -> GoogleCalendar:
    return GoogleCalendar(
        token=token,
        extra={"calendar_id": "primary"},
        base_url=f"{base_url}/calendar/v3/",
        timeout=timeout,
        token_uri=f"{base_url}/token",
    )


def refreshable(access_token: str | None = None, refresh_token: str = REFRESH) -> str:
    info = {
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    if access_token:
        info["access_token"] = access_token
    return json.dumps(info)


def fetch_event(base_url: str, event_id: str) -> dict:
    response = requests.get(
        f"{base_url}/calendar/v3/calendars/primary/events/{event_id}",
        headers={"Authorization": f"Bearer {ACCESS}"},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()


def upsert_error(calendar: GoogleCalendar) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        calendar.upsert_event("booking-1", EVENT)
    return caught.value


def test_calendar_check_describes_the_calendar(sandbox_url, account):
    assert adapter(sandbox_url).check().startswith("Google Calendar '")


def test_calendar_upsert_inserts_with_the_derived_id(sandbox_url, sandbox_client, account):
    event_id = adapter(sandbox_url).upsert_event("booking-1", EVENT)

    assert event_id == GoogleCalendar.event_id_for("booking-1")
    [insert] = sandbox_client.requests("google_calendar")
    assert (insert["method"], insert["path"]) == ("POST", "/calendar/v3/calendars/primary/events")
    assert "sendUpdates=none" in insert["query"]
    assert insert["body"]["id"] == event_id
    stored = fetch_event(sandbox_url, event_id)
    assert stored["summary"] == "Haircut"
    assert stored["status"] == "confirmed"


def test_calendar_upsert_twice_updates_the_same_event(sandbox_url, sandbox_client, account):
    calendar = adapter(sandbox_url)
    event_id = calendar.upsert_event("booking-1", EVENT)
    first = fetch_event(sandbox_url, event_id)
    assert calendar.upsert_event("booking-1", {**EVENT, "summary": "Haircut (moved)"}) == event_id

    second = fetch_event(sandbox_url, event_id)
    assert second["summary"] == "Haircut (moved)"
    assert second["sequence"] > first["sequence"]
    calls = [(r["method"], r["status"]) for r in sandbox_client.requests("google_calendar")]
    assert ("POST", 409) in calls
    assert ("PUT", 200) in calls


def test_calendar_delete_twice_is_not_an_error(sandbox_url, account):
    calendar = adapter(sandbox_url)
    event_id = calendar.upsert_event("booking-1", EVENT)
    calendar.delete_event("booking-1")
    calendar.delete_event("booking-1")
    calendar.delete_event("never-booked")
    assert fetch_event(sandbox_url, event_id)["status"] == "cancelled"


def test_calendar_upsert_after_delete_confirms_the_event_again(sandbox_url, account):
    calendar = adapter(sandbox_url)
    event_id = calendar.upsert_event("booking-1", EVENT)
    calendar.delete_event("booking-1")
    calendar.upsert_event("booking-1", EVENT)
    assert fetch_event(sandbox_url, event_id)["status"] == "confirmed"


def test_calendar_refresh_token_gets_an_access_token_from_token_uri(
    sandbox_url, sandbox_client, account
):
    assert adapter(sandbox_url, token=refreshable()).check()
    paths = [r["path"] for r in sandbox_client.requests("google_calendar")]
    assert any(path.startswith("/token") for path in paths)


def test_calendar_expired_access_token_is_refreshed(sandbox_url, sandbox_client, account):
    token = refreshable(access_token="ya29.CANARYexpiredTOKENabcdefgh")
    assert adapter(sandbox_url, token=token).check()
    statuses = [r["status"] for r in sandbox_client.requests("google_calendar")]
    assert statuses[0] == 401
    assert statuses[-1] == 200


def test_calendar_revoked_refresh_token_is_credentials_rejected(
    sandbox_url, account, assert_secret_free
):
    revoked = "1//CANARYrevokedREFRESHtokenabcdefgh"
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url, token=refreshable(refresh_token=revoked)).check()
    assert caught.value.credentials_rejected
    assert caught.value.code == "invalid_grant"
    assert_secret_free(caught.value, revoked)
    assert_secret_free(caught.value, CLIENT_SECRET)


def test_calendar_wrong_access_token_is_credentials_rejected(
    sandbox_url, account, assert_secret_free
):
    wrong = "ya29.CANARYwrongACCESStokenabcdefgh"
    err = upsert_error(adapter(sandbox_url, token=wrong))
    assert err.credentials_rejected
    assert_secret_free(err, wrong)


def test_calendar_401_is_credentials_rejected(sandbox_url, sandbox_client, account):
    sandbox_client.fault("google_calendar", mode="status", status=401, count=1)
    assert upsert_error(adapter(sandbox_url)).credentials_rejected


def test_calendar_invalid_event_is_permanent(sandbox_url, account):
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).upsert_event("booking-1", {"summary": "no start or end"})
    assert caught.value.kind == "permanent"
    assert caught.value.status == 400


def test_calendar_429_waits_retry_after(sandbox_url, sandbox_client, account):
    sandbox_client.fault("google_calendar", mode="status", status=429, retry_after=7, count=1)
    err = upsert_error(adapter(sandbox_url))
    assert err.rate_limited
    assert err.retry_after == pytest.approx(7, abs=1)


def test_calendar_503_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("google_calendar", mode="status", status=503, count=1)
    assert upsert_error(adapter(sandbox_url)).kind == "transient"


def test_calendar_timeout_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("google_calendar", mode="timeout", count=1)
    err = upsert_error(adapter(sandbox_url, timeout=0.5))
    assert err.kind == "transient"
    assert str(err) == "Google Calendar did not answer within 0.5 s"


def test_calendar_403_rate_limit_exceeded_waits_retry_after(sandbox_url, sandbox_client, account):
    sandbox_client.fault("google_calendar", mode="status", status=403, retry_after=5, count=1)
    err = upsert_error(adapter(sandbox_url))
    assert err.rate_limited
    assert err.code == "rateLimitExceeded"
    assert err.retry_after == 5


def test_calendar_quota_exceeded_waits_an_hour(sandbox_url, sandbox_client, account):
    body = {
        "error": {
            "code": 403,
            "message": "Calendar usage limits exceeded.",
            "errors": [{"domain": "usageLimits", "reason": "quotaExceeded"}],
        }
    }
    sandbox_client.fault("google_calendar", mode="status", status=403, body=body, count=1)
    err = upsert_error(adapter(sandbox_url))
    assert err.rate_limited
    assert err.retry_after == 3600


def test_calendar_rejected_client_is_credentials_rejected(sandbox_url, sandbox_client, account):
    sandbox_client.fault("google_calendar", mode="status", status=401, path="/token", count=1)
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url, token=refreshable()).check()
    assert caught.value.credentials_rejected
    assert caught.value.code == "invalid_client"


def test_calendar_unknown_calendar_is_permanent(sandbox_url, sandbox_client):
    sandbox_client.add_account("google_calendar", access_token=ACCESS, calendars=["work"])
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).check()
    assert caught.value.kind == "permanent"
    assert caught.value.status == 404


def test_calendar_failed_update_after_duplicate_is_reported_cleanly(
    sandbox_url, sandbox_client, account
):
    calendar = adapter(sandbox_url)
    event_id = calendar.upsert_event("booking-1", EVENT)
    path = f"/calendar/v3/calendars/primary/events/{event_id}"
    sandbox_client.fault("google_calendar", mode="status", status=503, path=path, count=1)
    err = upsert_error(calendar)
    assert err.kind == "transient"
    assert err.__context__ is None
