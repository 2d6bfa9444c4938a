"""The sandbox's Google Calendar v3 API and token endpoint, through googleapiclient + google-auth."""

from __future__ import annotations

import httplib2
import pytest
import requests
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

ACCESS = "ya29.sandbox-access-token"
REFRESH = "1//sandbox-refresh-token"
CLIENT_ID = "corbi.apps.googleusercontent.com"
CLIENT_SECRET = "sandbox-client-secret"
EVENT = {
    "id": "abc123def456",
    "summary": "Haircut",
    "description": "Booking via Corbi",
    "start": {"dateTime": "2030-01-01T10:00:00Z"},
    "end": {"dateTime": "2030-01-01T11:00:00Z"},
    "attendees": [{"email": "client@example.test"}],
}


@pytest.fixture
def account(sandbox_client):
    return sandbox_client.add_account(
        "google_calendar",
        access_token=ACCESS,
        refresh_token=REFRESH,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        calendars=["primary", "team@group.calendar.google.com"],
    )


def service(sandbox, credentials: Credentials | None = None, timeout: float | None = None):
    credentials = credentials or Credentials(token=ACCESS)
    options = {"api_endpoint": sandbox.url + "/calendar/v3/"}
    if timeout is None:
        return build(
            "calendar", "v3", credentials=credentials, static_discovery=True, client_options=options
        )
    http = AuthorizedHttp(credentials, http=httplib2.Http(timeout=timeout))
    return build("calendar", "v3", http=http, static_discovery=True, client_options=options)


def refreshable(sandbox, refresh_token: str = REFRESH, token: str | None = None) -> Credentials:
    return Credentials(
        token=token,
        refresh_token=refresh_token,
        token_uri=sandbox.url + "/token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )


def http_error(request) -> HttpError:
    with pytest.raises(HttpError) as caught:
        request.execute()
    return caught.value


def test_insert_returns_a_full_event(sandbox, account):
    event = (
        service(sandbox)
        .events()
        .insert(calendarId="primary", sendUpdates="none", body=EVENT)
        .execute()
    )

    assert event["kind"] == "calendar#event"
    assert (event["id"], event["status"], event["sequence"]) == ("abc123def456", "confirmed", 0)
    assert event["iCalUID"] == "abc123def456@google.com"
    assert event["htmlLink"].startswith("https://www.google.com/calendar/event?eid=")
    assert event["reminders"] == {"useDefault": True}
    assert event["eventType"] == "default"
    assert event["attendees"] == [{"email": "client@example.test", "responseStatus": "needsAction"}]
    assert event["organizer"]["email"] == account["email"]
    assert event["etag"].startswith('"')
    for key in ("created", "updated", "summary", "description", "start", "end"):
        assert key in event


def test_insert_duplicate_get_update_lifecycle(sandbox, sandbox_client, account):
    events = service(sandbox).events()
    events.insert(calendarId="primary", body=EVENT).execute()

    err = http_error(events.insert(calendarId="primary", body=EVENT))
    assert err.status_code == 409
    assert err.error_details[0]["reason"] == "duplicate"
    assert err.reason == "The requested identifier already exists."

    assert events.get(calendarId="primary", eventId=EVENT["id"]).execute()["summary"] == "Haircut"
    updated = events.update(
        calendarId="primary", eventId=EVENT["id"], body={**EVENT, "summary": "Moved"}
    ).execute()
    assert (updated["summary"], updated["sequence"]) == ("Moved", 1)
    patched = events.patch(
        calendarId="primary", eventId=EVENT["id"], body={"location": "Main St 1"}
    ).execute()
    assert (patched["summary"], patched["location"], patched["sequence"]) == (
        "Moved",
        "Main St 1",
        2,
    )
    calls = [(r["method"], r["status"]) for r in sandbox_client.requests("google_calendar")]
    assert calls == [("POST", 200), ("POST", 409), ("GET", 200), ("PUT", 200), ("PATCH", 200)]
    assert sandbox_client.requests("google_calendar")[0]["query_params"] == {"alt": "json"}


def test_delete_then_get_is_cancelled_and_second_delete_is_410(sandbox, account):
    events = service(sandbox).events()
    events.insert(calendarId="primary", body=EVENT).execute()

    assert events.delete(calendarId="primary", eventId=EVENT["id"]).execute() == ""
    assert events.get(calendarId="primary", eventId=EVENT["id"]).execute()["status"] == "cancelled"
    err = http_error(events.delete(calendarId="primary", eventId=EVENT["id"]))
    assert (err.status_code, err.error_details[0]["reason"]) == (410, "deleted")
    err = http_error(events.insert(calendarId="primary", body=EVENT))
    assert err.status_code == 409
    restored = events.update(calendarId="primary", eventId=EVENT["id"], body=EVENT).execute()
    assert restored["status"] == "confirmed"


def test_unknown_event_and_calendar_are_404(sandbox, account):
    events = service(sandbox).events()
    err = http_error(events.get(calendarId="primary", eventId="nosuchevent"))
    assert (err.status_code, err.error_details[0]["reason"]) == (404, "notFound")
    err = http_error(events.insert(calendarId="other@group.calendar.google.com", body=EVENT))
    assert err.status_code == 404


@pytest.mark.parametrize("event_id", ["ABCDEF", "abcw12", "abc", "a" * 1025, "abc-def"])
def test_invalid_ids_are_400_invalid(sandbox, account, event_id):
    err = http_error(
        service(sandbox).events().insert(calendarId="primary", body={**EVENT, "id": event_id})
    )
    assert err.status_code == 400
    assert err.error_details[0] == {
        "message": "Invalid resource id value.",
        "domain": "global",
        "reason": "invalid",
    }


def test_insert_needs_start_and_end(sandbox, account):
    events = service(sandbox).events()
    err = http_error(
        events.insert(calendarId="primary", body={"summary": "x", "start": EVENT["start"]})
    )
    assert (err.status_code, err.reason) == (400, "Missing end time.")
    assert err.error_details[0]["reason"] == "required"
    body = {**EVENT, "end": {"dateTime": "2029-01-01T10:00:00Z"}}
    err = http_error(events.insert(calendarId="primary", body=body))
    assert err.error_details[0]["reason"] == "timeRangeEmpty"


def test_calendar_list_and_calendar_get(sandbox, account):
    svc = service(sandbox)
    entry = svc.calendarList().get(calendarId="primary").execute()
    assert entry["kind"] == "calendar#calendarListEntry"
    assert (entry["id"], entry["primary"], entry["accessRole"]) == (account["email"], True, "owner")
    secondary = svc.calendars().get(calendarId="team@group.calendar.google.com").execute()
    assert secondary["id"] == "team@group.calendar.google.com"


def test_events_are_per_calendar(sandbox, account):
    events = service(sandbox).events()
    first = events.insert(calendarId="primary", body=EVENT).execute()
    second = events.insert(calendarId="team@group.calendar.google.com", body=EVENT).execute()
    assert first["id"] == second["id"]
    assert second["organizer"]["email"] == "team@group.calendar.google.com"


def test_token_refresh_then_call_succeeds(sandbox, sandbox_client, account):
    credentials = refreshable(sandbox)
    service(sandbox, credentials).calendarList().get(calendarId="primary").execute()

    assert credentials.token.startswith("ya29.")
    assert credentials.token != ACCESS
    calls = [(r["path"], r["status"]) for r in sandbox_client.requests("google_calendar")]
    assert calls == [("/token", 200), ("/calendar/v3/users/me/calendarList/primary", 200)]
    token_call = sandbox_client.requests("google_calendar")[0]
    assert token_call["body"]["grant_type"] == "refresh_token"


def test_stale_token_gets_401_then_is_refreshed_and_retried(sandbox, sandbox_client, account):
    credentials = refreshable(sandbox, token="ya29.stale")
    service(sandbox, credentials).calendarList().get(calendarId="primary").execute()

    statuses = [r["status"] for r in sandbox_client.requests("google_calendar")]
    assert statuses == [401, 200, 200]
    first = sandbox_client.requests("google_calendar")[0]
    assert first["outcome"] == "auth_failed"


def test_wrong_access_token_is_401_auth_error(sandbox, account):
    svc = service(sandbox, Credentials(token="ya29.wrong"))
    with pytest.raises(RefreshError):
        svc.calendarList().get(calendarId="primary").execute()


def test_revoked_refresh_token_is_invalid_grant(sandbox, account):
    with pytest.raises(RefreshError) as caught:
        service(sandbox, refreshable(sandbox, refresh_token="1//revoked")).calendarList().get(
            calendarId="primary"
        ).execute()
    assert "invalid_grant" in str(caught.value)


def test_rate_limit_is_403_rate_limit_exceeded_and_sdk_retries_it(sandbox, sandbox_client):
    sandbox_client.add_account("google_calendar", access_token=ACCESS, rate_per_second=1)
    request = service(sandbox).calendarList().get(calendarId="primary")
    request.execute()
    err = http_error(request)
    assert err.status_code == 403
    assert err.error_details[0]["reason"] == "rateLimitExceeded"
    assert err.resp["retry-after"] == "1"


def test_fault_503_then_success_with_sdk_retry(sandbox, sandbox_client, account):
    sandbox_client.fault("google_calendar", status=503, count=1)
    request = service(sandbox).calendarList().get(calendarId="primary")
    err = http_error(request)
    assert (err.status_code, err.error_details[0]["reason"]) == (503, "backendError")
    assert request.execute()["id"] == account["email"]


def test_timeout_fault_makes_the_client_time_out(sandbox, sandbox_client, account):
    sandbox_client.fault("google_calendar", mode="timeout", count=1)
    request = service(sandbox, timeout=0.5).calendarList().get(calendarId="primary")
    with pytest.raises(TimeoutError):
        request.execute()


def test_401_body_and_www_authenticate_header(sandbox, account):
    url = f"{sandbox.url}/calendar/v3/users/me/calendarList/primary"
    wrong = requests.get(url, headers={"Authorization": "Bearer ya29.nope"}, timeout=5)
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    error = wrong.json()["error"]
    assert (error["status"], error["errors"][0]["message"]) == (
        "UNAUTHENTICATED",
        "Invalid Credentials",
    )
    assert error["errors"][0]["reason"] == "authError"
    missing = requests.get(url, timeout=5).json()["error"]
    assert missing["errors"][0]["reason"] == "required"
