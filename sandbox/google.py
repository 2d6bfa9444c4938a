"""Google Calendar v3 (events, calendars, calendarList) and the OAuth 2 token endpoint."""

from __future__ import annotations

import base64
import hmac
import itertools
import re
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from sandbox import google_oauth
from sandbox.common import json_response, outcome, override_response, state_of
from sandbox.control import echo_request
from sandbox.state import State, acquire, retry_after_seconds

SLUG = "google_calendar"
TOKEN_PATH = "/token"
TOKEN_TTL = 3599

_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_READ_ONLY = {"kind", "etag", "id", "htmlLink", "created", "updated", "iCalUID", "creator"}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_etag_counter = itertools.count(1)


def error(
    status: int,
    message: str,
    reason: str,
    domain: str = "global",
    *,
    headers: dict[str, str] | None = None,
    location: tuple[str, str] | None = None,
    item_message: str | None = None,
) -> web.Response:
    item: dict[str, Any] = {"message": item_message or message, "domain": domain, "reason": reason}
    if location:
        item["location"], item["locationType"] = location
    err: dict[str, Any] = {"code": status, "message": message, "errors": [item]}
    if status in _STATUS:
        err["status"] = _STATUS[status]
    return json_response({"error": err}, status, headers)


def oauth_error(status: int, code: str, description: str) -> web.Response:
    return json_response(
        {"error": code, "error_description": description},
        status,
        {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"},
    )


def _unauthenticated(missing: bool) -> web.Response:
    if missing:
        return error(
            401,
            "Request is missing required authentication credential. Expected OAuth 2 access "
            "token, login cookie or other valid authentication credential. See "
            "https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "required",
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            location=("Authorization", "header"),
            item_message="Login Required.",
        )
    return error(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "authError",
        headers={
            "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
        },
        location=("Authorization", "header"),
        item_message="Invalid Credentials",
    )


def _rate_limited(status: int, wait: float) -> web.Response:
    return error(
        status,
        "Rate Limit Exceeded",
        "rateLimitExceeded",
        "usageLimits",
        headers={"Retry-After": str(retry_after_seconds(wait))},
    )


def fault_response(
    request: web.Request, status: int, retry_after: float | None, body: Any
) -> web.Response:
    headers = {"Retry-After": str(retry_after_seconds(retry_after))} if retry_after else None
    if body is not None:
        return override_response(echo_request(request, body), status, headers)
    if request.path == TOKEN_PATH:
        if status >= 500:
            code = "temporarily_unavailable" if status == 503 else "server_error"
            return oauth_error(status, code, "The service is temporarily unavailable.")
        if status == 401:
            return oauth_error(401, "invalid_client", "Unauthorized")
        return oauth_error(status, "invalid_grant", "Token has been expired or revoked.")
    if status in (403, 429):
        return _rate_limited(status, retry_after or 1)
    if status == 401:
        return _unauthenticated(missing=False)
    if status >= 500:
        message = "The service is currently unavailable." if status == 503 else "Backend Error"
        return error(status, message, "backendError", headers=headers)
    reasons = {
        400: ("Bad Request", "badRequest"),
        404: ("Not Found", "notFound"),
        409: ("The requested identifier already exists.", "duplicate"),
        410: ("Resource has been deleted", "deleted"),
        412: ("Precondition Failed", "conditionNotMet"),
    }
    message, reason = reasons.get(status, ("Error", "badRequest"))
    return error(status, message, reason, headers=headers)


def _rfc3339(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(ts * 1000) % 1000:03d}Z"
    )


def _etag() -> str:
    return f'"{time.time_ns() // 1000}{next(_etag_counter) % 1000:03d}"'


def _account_key(account: dict[str, Any]) -> str:
    return account["refresh_token"] or account["access_token"]


def _authenticate(state: State, request: web.Request) -> tuple[dict[str, Any] | None, bool]:
    """(account, header_missing)."""
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        token = request["query"].get("access_token") or ""
        if not token:
            return None, True
    account = state.google_tokens.get(token)
    expires = state.google_token_expiry.get(token)
    if account is None or (expires is not None and time.monotonic() > expires):
        return None, False
    return account, False


def _calendar_id(account: dict[str, Any], calendar_id: str) -> str | None:
    """The account's id for `calendar_id` ('primary' -> the account email), or None if unknown."""
    calendars = account["calendars"]
    if calendar_id == "primary" or calendar_id == account["email"]:
        return account["email"] if "primary" in calendars else None
    return calendar_id if calendar_id in calendars else None


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    if request.path == TOKEN_PATH:
        return _token(state, request)
    account, missing = _authenticate(state, request)
    if account is None:
        outcome(request, "auth_failed")
        return _unauthenticated(missing)
    bucket = state.account_bucket(SLUG, _account_key(account), account)
    if bucket is not None:
        wait = acquire([bucket])
        if wait:
            outcome(request, "rate_limited")
            return _rate_limited(state.config["google_rate_limit_status"], wait)

    parts = request.path.removeprefix("/calendar/v3/").rstrip("/").split("/")
    method = request.method
    if len(parts) == 4 and parts[:3] == ["users", "me", "calendarList"] and method == "GET":
        calendar = _calendar_id(account, parts[3])
        if calendar is None:
            return _not_found(request)
        outcome(request, "calendar")
        return json_response(_calendar_list_entry(account, calendar))
    if not parts or parts[0] != "calendars" or len(parts) < 2:
        return _not_found(request)
    calendar = _calendar_id(account, parts[1])
    if calendar is None:
        return _not_found(request)
    events = state.google_events.setdefault((_account_key(account), calendar), {})
    if len(parts) == 2 and method == "GET":
        outcome(request, "calendar")
        return json_response(_calendar(account, calendar))
    if len(parts) == 3 and parts[2] == "events":
        if method == "POST":
            return _insert(request, account, calendar, events)
        if method == "GET":
            return _list(request, account, calendar, events)
    if len(parts) == 4 and parts[2] == "events":
        event = events.get(parts[3])
        if event is None:
            return _not_found(request)
        if method == "GET":
            outcome(request, "fetched", event["id"])
            return json_response(event)
        if method in ("PUT", "PATCH"):
            return _update(request, event, patch=method == "PATCH")
        if method == "DELETE":
            if event["status"] == "cancelled":
                outcome(request, "deleted_already", event["id"])
                return error(410, "Resource has been deleted", "deleted")
            event["status"] = "cancelled"
            event["updated"] = _rfc3339(time.time())
            event["etag"] = _etag()
            outcome(request, "deleted", event["id"])
            return web.Response(status=204)
    return _not_found(request)


def _not_found(request: web.Request) -> web.Response:
    outcome(request, "not_found")
    return error(404, "Not Found", "notFound")


def _calendar(account: dict[str, Any], calendar: str) -> dict[str, Any]:
    return {
        "kind": "calendar#calendar",
        "etag": '"sandbox-calendar"',
        "id": calendar,
        "summary": calendar,
        "timeZone": account["time_zone"],
        "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
    }


def _calendar_list_entry(account: dict[str, Any], calendar: str) -> dict[str, Any]:
    entry = {
        **_calendar(account, calendar),
        "kind": "calendar#calendarListEntry",
        "colorId": "14",
        "backgroundColor": "#9fe1e7",
        "foregroundColor": "#000000",
        "selected": True,
        "accessRole": "owner",
        "defaultReminders": [{"method": "popup", "minutes": 10}],
        "notificationSettings": {"notifications": []},
    }
    if calendar == account["email"]:
        entry["primary"] = True
    return entry


def _list(
    request: web.Request, account: dict[str, Any], calendar: str, events: dict[str, Any]
) -> web.Response:
    show_deleted = request["query"].get("showDeleted") == "true"
    items = [e for e in events.values() if show_deleted or e["status"] != "cancelled"]
    outcome(request, "listed")
    return json_response(
        {
            "kind": "calendar#events",
            "etag": _etag(),
            "summary": calendar,
            "updated": _rfc3339(time.time()),
            "timeZone": account["time_zone"],
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "items": items,
        }
    )


def _parse_time(value: Any, which: str) -> tuple[str, Any] | str:
    """('date'|'dateTime', comparable value) or an error message."""
    if not isinstance(value, dict) or not (value.get("dateTime") or value.get("date")):
        return f"Missing {which} time."
    tz = value.get("timeZone")
    if tz is not None:
        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError):
            return f"Invalid time zone definition for {which} time."
    if value.get("dateTime"):
        raw = str(value["dateTime"])
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return f"Invalid {which} time."
        if parsed.tzinfo is None:
            if tz is None:
                return f"Missing time zone definition for {which} time."
            parsed = parsed.replace(tzinfo=ZoneInfo(str(tz)))
        return "dateTime", parsed
    try:
        return "date", date.fromisoformat(str(value["date"]))
    except ValueError:
        return f"Invalid {which} time."


def _validate_times(body: dict[str, Any]) -> web.Response | None:
    end = _parse_time(body.get("end"), "end")
    start = _parse_time(body.get("start"), "start")
    for parsed in (end, start):
        if isinstance(parsed, str):
            return error(400, parsed, "required" if parsed.startswith("Missing") else "invalid")
    assert not isinstance(start, str) and not isinstance(end, str)
    if start[0] != end[0]:
        return error(
            400, "Start and end times must either both be date or both be dateTime.", "invalid"
        )
    if end[1] < start[1] or (start[0] == "date" and end[1] == start[1]):
        return error(400, "The specified time range is empty.", "timeRangeEmpty", "calendar")
    return None


def _apply_body(event: dict[str, Any], body: dict[str, Any]) -> None:
    for key, value in body.items():
        if key in _READ_ONLY or key in ("organizer", "sequence"):
            continue
        if key == "attendees" and isinstance(value, list):
            value = [
                {**a, "responseStatus": a.get("responseStatus", "needsAction")}
                if isinstance(a, dict)
                else a
                for a in value
            ]
        event[key] = value
    event.setdefault("reminders", {"useDefault": True})
    event.setdefault("eventType", "default")


def _insert(
    request: web.Request, account: dict[str, Any], calendar: str, events: dict[str, Any]
) -> web.Response:
    body = request["body"]
    if not isinstance(body, dict):
        outcome(request, "invalid_request")
        return error(400, "Bad Request", "badRequest")
    event_id = body.get("id")
    if event_id is not None:
        if (
            not isinstance(event_id, str)
            or not _EVENT_ID.fullmatch(event_id)
            or body.get("iCalUID")
        ):
            outcome(request, "invalid_id")
            return error(400, "Invalid resource id value.", "invalid")
    problem = _validate_times(body)
    if problem is not None:
        outcome(request, "invalid_request")
        return problem
    if event_id is None:
        event_id = base64.b32hexencode(uuid.uuid4().bytes).decode().lower().rstrip("=")
    elif event_id in events:
        outcome(request, "duplicate", event_id)
        return error(409, "The requested identifier already exists.", "duplicate")
    now = _rfc3339(time.time())
    eid = base64.b64encode(f"{event_id} {calendar}".encode()).decode().rstrip("=")
    event: dict[str, Any] = {
        "kind": "calendar#event",
        "etag": _etag(),
        "id": event_id,
        "status": "confirmed",
        "htmlLink": f"https://www.google.com/calendar/event?eid={eid}",
        "created": now,
        "updated": now,
        "creator": {"email": account["email"], "self": True},
        "organizer": {"email": calendar, "self": True},
        "iCalUID": body.get("iCalUID") or f"{event_id}@google.com",
        "sequence": 0,
    }
    _apply_body(event, body)
    event["status"] = body.get("status") or "confirmed"
    events[event_id] = event
    outcome(request, "created", event_id)
    return json_response(event)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(target)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _update(request: web.Request, event: dict[str, Any], *, patch: bool) -> web.Response:
    body = request["body"]
    if not isinstance(body, dict):
        outcome(request, "invalid_request")
        return error(400, "Bad Request", "badRequest")
    if patch:
        merged = _merge({k: v for k, v in event.items() if k not in _READ_ONLY}, body)
    else:
        merged = body
    problem = _validate_times(merged)
    if problem is not None:
        outcome(request, "invalid_request")
        return problem
    kept = {k: event[k] for k in (*_READ_ONLY, "organizer", "sequence", "status")}
    event.clear()
    event.update(kept)
    if not patch:
        # A full update resets omitted fields, status included: PUT restores a cancelled event.
        event["status"] = "confirmed"
    _apply_body(event, merged)
    event["sequence"] = kept["sequence"] + 1
    event["updated"] = _rfc3339(time.time())
    event["etag"] = _etag()
    outcome(request, "updated", event["id"])
    return json_response(event)


def _token(state: State, request: web.Request) -> web.Response:
    params = request["body"] if isinstance(request["body"], dict) else {}
    if request.method != "POST":
        outcome(request, "invalid_request")
        return oauth_error(405, "invalid_request", "Method not allowed")
    grant = params.get("grant_type")
    if grant == "authorization_code":
        return google_oauth.code_exchange(state, request, params)
    if grant != "refresh_token":
        outcome(request, "invalid_request")
        return oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant or ''}")
    client_id, secret = google_oauth.client_credentials(request, params)
    if not client_id:
        outcome(request, "invalid_client")
        return oauth_error(400, "invalid_request", "Could not determine client ID from request.")
    candidates = [a for a in state.accounts[SLUG].values() if a["client_id"] == client_id]
    if not candidates:
        outcome(request, "invalid_client")
        return oauth_error(401, "invalid_client", "The OAuth client was not found.")
    if not any(hmac.compare_digest(a["client_secret"] or "", secret) for a in candidates):
        outcome(request, "invalid_client")
        return oauth_error(401, "invalid_client", "Unauthorized")
    refresh = params.get("refresh_token")
    if not refresh:
        outcome(request, "invalid_request")
        return oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
    # A refresh token an OAuth grant issued (google_oauth.py), or one registered with an account.
    issued = state.google_refresh_tokens.get(refresh)
    account = (
        issued["account"]
        if issued is not None and issued["client_id"] == client_id
        else next(
            (
                a
                for a in candidates
                if a["refresh_token"] == refresh
                and refresh not in state.google_revoked
                and hmac.compare_digest(a["client_secret"] or "", secret)
            ),
            None,
        )
    )
    if account is None:
        outcome(request, "invalid_grant")
        return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
    token = google_oauth.issue_access_token(state, account, refresh)
    outcome(request, "token_issued")
    return json_response(
        {
            "access_token": token,
            "expires_in": int(state.config["google_token_ttl_seconds"]),
            "scope": params.get("scope") or account["scope"],
            "token_type": "Bearer",
        },
        200,
        {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"},
    )
