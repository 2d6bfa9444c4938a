"""GoogleCalendar against the sandbox's Calendar v3 API and OAuth token endpoint."""

from __future__ import annotations

import json
import re

import pytest
import requests

from shared.providers import OutboundMessage, ProviderError
from shared.providers.google_calendar import GoogleCalendar
from tests.shared.providers.helpers import Answer, Mapped, assert_mapped, provoke

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


ACCOUNT = {
    "access_token": ACCESS,
    "refresh_token": REFRESH,
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "calendars": ["primary"],
}


@pytest.fixture
def account(sandbox_client):
    sandbox_client.add_account("google_calendar", **ACCOUNT)


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


WRONG = "ya29.CANARYwrongACCESStokenabcdefgh"
REVOKED = "1//CANARYrevokedREFRESHtokenabcdefgh"


def google_error(status: int, reason: str, message: str, domain: str = "global") -> dict:
    """A Google API error body."""
    errors = [{"domain": domain, "reason": reason, "message": message}]
    return {"error": {"code": status, "message": message, "errors": errors}}


def secrets_in(token: str) -> list[str]:
    """The secret values of a token: itself, or those of an authorized-user JSON."""
    if not token.startswith("{"):
        return [token]
    info = json.loads(token)
    return [info[k] for k in ("access_token", "refresh_token", "client_secret") if k in info]


# How the sandbox answers -> the ProviderError the adapter must raise.
ERRORS = [
    pytest.param(
        Answer(token=WRONG),
        Mapped("credentials", status=401, says="no refresh token to renew it"),
        id="unknown-access-token",
    ),
    pytest.param(
        Answer(fault={"status": 401}),
        Mapped("credentials", status=401, says="no refresh token to renew it"),
        id="http-401",
    ),
    pytest.param(
        Answer(
            fault={
                "status": 403,
                "body": google_error(403, "insufficientPermissions", "Insufficient Permission"),
            }
        ),
        Mapped("credentials", "insufficientPermissions", status=403),
        id="insufficient-permissions-403",
    ),
    pytest.param(
        Answer(token=refreshable(refresh_token=REVOKED), call="check"),
        Mapped("credentials", "invalid_grant"),
        id="check-revoked-refresh-token",
    ),
    pytest.param(
        Answer(token=refreshable(), fault={"status": 401, "path": "/token"}, call="check"),
        Mapped("credentials", "invalid_client"),
        id="check-token-endpoint-rejects-the-client",
    ),
    pytest.param(
        # google-auth retries a failed refresh itself: the endpoint fails every try here.
        Answer(
            token=refreshable(), fault={"status": 503, "path": "/token", "count": 10}, call="check"
        ),
        Mapped("transient", "temporarily_unavailable"),
        id="check-token-endpoint-503",
    ),
    pytest.param(
        Answer(payload={"summary": "no start or end"}),
        Mapped("permanent", "required", status=400),
        id="invalid-event-400",
    ),
    pytest.param(
        Answer(account={"calendars": ["work"]}, call="check"),
        Mapped("permanent", "notFound", status=404),
        id="check-unknown-calendar-404",
    ),
    pytest.param(
        Answer(fault={"status": 429, "retry_after": 7}),
        Mapped("rate_limited", "rateLimitExceeded", retry_after=(6, 8), status=429),
        id="http-429-retry-after",
    ),
    pytest.param(
        Answer(fault={"status": 403, "retry_after": 5}),
        Mapped("rate_limited", "rateLimitExceeded", retry_after=5, status=403),
        id="rate-limit-exceeded-403",
    ),
    pytest.param(
        Answer(
            fault={
                "status": 403,
                "body": google_error(
                    403, "quotaExceeded", "Calendar usage limits exceeded.", "usageLimits"
                ),
            }
        ),
        Mapped("rate_limited", "quotaExceeded", retry_after=3600, status=403),
        id="quota-exceeded-waits-an-hour",
    ),
    pytest.param(
        Answer(fault={"status": 503}),
        Mapped("transient", "backendError", status=503),
        id="http-503",
    ),
    pytest.param(
        Answer(fault={"mode": "timeout"}),
        Mapped("transient", says="Google Calendar did not answer within 0.5 s"),
        id="timeout",
    ),
]


@pytest.mark.parametrize(("answer", "mapped"), ERRORS)
def test_calendar_maps_each_provider_answer_to_one_error(
    sandbox_url, sandbox_client, assert_secret_free, answer, mapped
):
    token = answer.token or ACCESS
    calendar = adapter(sandbox_url, token=token, timeout=answer.timeout)
    upsert = lambda: calendar.upsert_event("booking-1", answer.payload or EVENT)  # noqa: E731
    err = provoke(sandbox_client, "google_calendar", answer, ACCOUNT, calendar, upsert)
    assert_mapped(err, mapped, assert_secret_free, secrets_in(token))


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


def test_calendar_event_id_is_stable_base32hex():
    event_id = GoogleCalendar.event_id_for("booking-42")
    assert event_id == GoogleCalendar.event_id_for("booking-42")
    assert event_id != GoogleCalendar.event_id_for("booking-43")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", event_id)
    assert event_id == "nqin96p834oqrmn3fsr6j5n9l8pc7oj2itv40d6pk66vrhv2uuag"


def test_calendar_send_is_a_permanent_error():
    calendar = GoogleCalendar(token="ya29.x", extra={}, base_url="http://127.0.0.1:9/calendar/v3")
    with pytest.raises(ProviderError) as caught:
        calendar.send(OutboundMessage(to="x", body="y"))
    assert caught.value.kind == "permanent"
