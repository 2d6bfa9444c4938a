"""Twilio Programmable Messaging (WhatsApp) simulator: accounts and messages (callbacks apart)."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sandbox import twilio_callbacks
from sandbox.accounts import PLACEHOLDER
from sandbox.common import (
    all_values,
    first_value,
    json_response,
    outcome,
    override_response,
    rfc2822,
    state_of,
)
from sandbox.control import echo_request
from sandbox.state import State, acquire, retry_after_seconds

SLUG = "whatsapp"
API_VERSION = "2010-04-01"

MAGIC_INVALID = "+15005550001"
MAGIC_REGION = "+15005550002"

_ADDRESS = re.compile(r"(?:whatsapp:)?\+[1-9]\d{6,14}")
_ACCOUNT = re.compile(r"/2010-04-01/Accounts/([^/]+)\.json")
_MESSAGES = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages\.json")
_MESSAGE = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)\.json")
_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
_MAGIC_PREFIX = "+1500555000"  # the magic recipients count as always in session

MAX_VARIABLES = 100
MAX_VARIABLE_KEY = 16
MAX_VARIABLE_VALUE = 1600
MAX_TEMPLATE_BODY = 1024

_FAULT_MESSAGES = {
    400: "Bad Request",
    401: "Authenticate",
    403: "Forbidden",
    404: "The requested resource was not found",
    405: "Method not allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error(
    code: int, message: str, status: int, headers: dict[str, str] | None = None
) -> web.Response:
    # The SDK raises TwilioServiceException instead of TwilioRestException if type+title appear.
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return json_response(body, status, headers)


def fault_response(
    request: web.Request, status: int, retry_after: float | None, body: Any
) -> web.Response:
    headers = {"Retry-After": str(retry_after_seconds(retry_after))} if retry_after else None
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Basic realm="Twilio API"'}
    if body is not None:
        return override_response(echo_request(request, body), status, headers)
    code = 20000 + status if status != 401 else 20003
    return error(code, _FAULT_MESSAGES.get(status, "Error"), status, headers)


@dataclass(slots=True)
class Message:
    """One created message; its status is derived from the clock so fetches need no timers."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    num_media: int
    messaging_service_sid: str | None
    created: float
    initial: str
    steps: list[tuple[float, str, int | None]] = field(default_factory=list)

    def current(self, now: float) -> tuple[str, int | None, float]:
        status, code, changed = self.initial, None, self.created
        for at, step_status, step_code in self.steps:
            if now >= at:
                status, code, changed = step_status, step_code, at
        return status, code, changed

    def render(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        status, code, changed = self.current(now)
        sent_at = next((at for at, s, _ in self.steps if s == "sent" and at <= now), None)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": rfc2822(self.created),
            "date_sent": rfc2822(sent_at) if sent_at else None,
            "date_updated": rfc2822(changed),
            "direction": "outbound-api",
            "error_code": code,
            "error_message": twilio_callbacks.ASYNC_ERRORS.get(code) if code else None,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(self.num_media),
            "num_segments": str(max(1, -(-len(self.body) // 1600))) if self.body else "1",
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": status,
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}/Media.json"
            },
            "to": self.to,
            "uri": uri,
        }


def _authenticate(state: State, request: web.Request) -> dict[str, Any] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    accounts = state.accounts[SLUG]
    account = accounts.get(user)
    if account is not None:
        ok = hmac.compare_digest(account["auth_token"], password)
    else:
        account = next((a for a in accounts.values() if user in a["api_keys"]), None)
        ok = account is not None and hmac.compare_digest(account["api_keys"][user], password)
    if not ok or account is None or account["status"] != "active":
        return None
    return account


def _unauthorized() -> web.Response:
    return error(20003, "Authenticate", 401, {"WWW-Authenticate": 'Basic realm="Twilio API"'})


def _not_found(path: str) -> web.Response:
    return error(20404, f"The requested resource {path} was not found", 404)


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    account = _authenticate(state, request)
    if account is None:
        outcome(request, "auth_failed")
        return _unauthorized()
    path = request.path
    match = _ACCOUNT.fullmatch(path) or _MESSAGES.fullmatch(path) or _MESSAGE.fullmatch(path)
    if match is None:
        outcome(request, "not_found")
        return _not_found(path)
    if match.group(1) != account["account_sid"]:
        outcome(request, "auth_failed")
        return _unauthorized()
    bucket = state.account_bucket(SLUG, account["account_sid"], account)
    if bucket is not None:
        wait = acquire([bucket])
        if wait:
            outcome(request, "rate_limited")
            return error(
                20429, "Too Many Requests", 429, {"Retry-After": str(retry_after_seconds(wait))}
            )
    if match.re is _ACCOUNT:
        if request.method != "GET":
            return _method_not_allowed(request)
        outcome(request, "account")
        return json_response(_render_account(account))
    if match.re is _MESSAGE:
        if request.method != "GET":
            return _method_not_allowed(request)
        message = state.twilio_messages.get(match.group(2))
        if message is None or message.account_sid != account["account_sid"]:
            outcome(request, "not_found")
            return _not_found(path)
        outcome(request, "fetched", message.sid)
        return json_response(message.render())
    if request.method != "POST":
        return _method_not_allowed(request)
    return _create_message(state, request, account)


def _method_not_allowed(request: web.Request) -> web.Response:
    outcome(request, "method_not_allowed")
    return error(20004, "Method not allowed", 405)


def _render_account(account: dict[str, Any]) -> dict[str, Any]:
    sid = account["account_sid"]
    created = rfc2822(1_700_000_000)
    base = f"/{API_VERSION}/Accounts/{sid}"
    return {
        "auth_token": account["auth_token"],
        "date_created": created,
        "date_updated": created,
        "friendly_name": account["friendly_name"],
        "owner_account_sid": sid,
        "sid": sid,
        "status": account["status"],
        "subresource_uris": {
            "messages": f"{base}/Messages.json",
            "calls": f"{base}/Calls.json",
            "incoming_phone_numbers": f"{base}/IncomingPhoneNumbers.json",
        },
        "type": account["type"],
        "uri": f"{base}.json",
    }


def _channel(address: str) -> str:
    return address.split(":", 1)[0] if ":" in address else "sms"


def _create_message(state: State, request: web.Request, account: dict[str, Any]) -> web.Response:
    params = request["body"] if isinstance(request["body"], dict) else {}
    to = first_value(params, "To")
    from_ = first_value(params, "From")
    service = first_value(params, "MessagingServiceSid")
    body = first_value(params, "Body") or ""
    media = all_values(params, "MediaUrl")
    content_sid = first_value(params, "ContentSid")
    content_variables = params.get("ContentVariables")
    callback = first_value(params, "StatusCallback")

    def reject(code: int, message: str, label: str) -> web.Response:
        outcome(request, label)
        return error(code, message, 400)

    if not to:
        return reject(21604, "A 'To' phone number is required.", "invalid_request")
    if not from_ and not service:
        return reject(21603, "A 'From' phone number is required.", "invalid_request")
    if content_variables is not None and not content_sid:
        return reject(21654, "ContentSid Required", "invalid_request")
    if not body and not media and not content_sid:
        return reject(21602, "Message body is required.", "invalid_request")
    if not content_sid and len(body) > 1600:
        return reject(
            21617, "The concatenated message body exceeds the 1600 character limit.", "too_long"
        )
    number = to.removeprefix("whatsapp:")
    if not _ADDRESS.fullmatch(to) or number == MAGIC_INVALID:
        return reject(21211, f"Invalid 'To' Phone Number: {number}", "invalid_number")
    if number == MAGIC_REGION:
        return reject(
            21408,
            "Permission to send an SMS has not been enabled for the region indicated by the "
            f"'To' number: {number}",
            "region_disabled",
        )
    if from_:
        if _channel(from_) != _channel(to):
            return reject(
                21910,
                "Invalid From and To pair. From and To should be of the same channel",
                "invalid_request",
            )
        if from_ not in account["senders"]:
            return reject(
                63007,
                "Twilio could not find a Channel with the specified From address",
                "unknown_sender",
            )
    if service and (
        not re.fullmatch(r"MG[0-9a-f]{32}", service)
        or (
            account["messaging_services"] is not None
            and service not in account["messaging_services"]
        )
    ):
        return reject(21701, f"The Messaging Service Sid {service} is invalid.", "invalid_request")
    if callback and urlsplit(callback).scheme not in ("http", "https"):
        return reject(21609, "Invalid 'StatusCallback' URL", "invalid_request")
    if content_sid:
        template = _template(account, content_sid)
        if template is None:
            return reject(21655, "The ContentSid is Invalid", "invalid_request")
        variables = _content_variables(content_variables)
        if variables is None:
            return reject(21656, "The ContentVariables Parameter is invalid", "invalid_request")
        rendered, failure = _render_template(template, variables)
        return _accept(state, request, account, params, rendered, 0, failure)
    if media and not all(_http_url(url) for url in media):
        return reject(21620, "Invalid media URL(s)", "invalid_request")
    failure = None if _in_session(state, account, from_, to) else 63016
    return _accept(state, request, account, params, body, 1 if media else 0, failure)


def _http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _template(account: dict[str, Any], sid: Any) -> dict[str, Any] | None:
    """The account's Content template `sid`, or None (malformed, unknown or another account's)."""
    if not isinstance(sid, str) or not _CONTENT_SID.fullmatch(sid):
        return None
    return next((t for t in account["content_templates"] if t["sid"] == sid), None)


def _content_variables(raw: Any) -> dict[str, str] | None:
    """ContentVariables as a dict, or None when Twilio answers 21656 (not a JSON string holding
    an object, too many pairs, a long key, an empty/non-string/long value, or a value with a
    newline, a tab or more than four consecutive spaces)."""
    if raw is None:
        return {}
    if not isinstance(raw, str):
        return None
    try:
        variables = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(variables, dict) or len(variables) > MAX_VARIABLES:
        return None
    for key, value in variables.items():
        if not key or len(key) > MAX_VARIABLE_KEY:
            return None
        if not isinstance(value, str) or not value or len(value) > MAX_VARIABLE_VALUE:
            return None
        if "\n" in value or "\t" in value or "     " in value:
            return None
    return variables


def _render_template(template: dict[str, Any], variables: dict[str, str]) -> tuple[str, int | None]:
    """The template body with the variables (defaults for the missing ones) and the async error
    the send will fail with: 63028 for variables the template has no placeholder for, 63021 for
    a rendered body over 1024 characters."""
    values = {**template["variables"], **variables}
    rendered = PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template["body"])
    if set(variables) - set(PLACEHOLDER.findall(template["body"])):
        return rendered, 63028
    if len(rendered) > MAX_TEMPLATE_BODY:
        return rendered, 63021
    return rendered, None


def _in_session(state: State, account: dict[str, Any], from_: str | None, to: str) -> bool:
    """Whether the customer wrote to this sender (any sender with a Messaging Service) within
    the account's `session_window_hours`; always true with no window or a magic recipient."""
    hours = account["session_window_hours"]
    if hours is None or to.removeprefix("whatsapp:").startswith(_MAGIC_PREFIX):
        return True
    sid = account["account_sid"]
    inbound = state.whatsapp_inbound
    if from_:
        times = [inbound.get((sid, from_, to), 0.0), inbound.get((sid, "*", to), 0.0)]
    else:
        times = [t for (a, _, c), t in inbound.items() if a == sid and c == to]
    return time.time() - max(times, default=0.0) < hours * 3600


def _accept(
    state: State,
    request: web.Request,
    account: dict[str, Any],
    params: dict[str, Any],
    body: str,
    num_media: int,
    failure: int | None,
) -> web.Response:
    """Store a valid send as a queued message, plan its statuses and schedule its callbacks;
    `failure` is the error code it fails with asynchronously (63016, 63021, 63028)."""
    from_ = first_value(params, "From")
    service = first_value(params, "MessagingServiceSid")
    callback = first_value(params, "StatusCallback")
    now = time.time()
    message = Message(
        sid="SM" + uuid.uuid4().hex,
        account_sid=account["account_sid"],
        to=first_value(params, "To"),
        from_=from_ or None,
        body=body,
        num_media=num_media,
        messaging_service_sid=service or None,
        created=now,
        initial="accepted" if service and not from_ else "queued",
    )
    # Twilio queues (never rejects) sends above the sender's MPS; model that as later transitions.
    sender = from_ or service
    t = max(now, state.twilio_sender_slots.get(sender, 0.0))
    state.twilio_sender_slots[sender] = t + 1.0 / state.config["whatsapp_sender_mps"]
    twilio_callbacks.plan_steps(state, message, t, [("failed", failure)] if failure else None)
    state.twilio_messages[message.sid] = message
    if callback:
        twilio_callbacks.schedule_callbacks(request.app, account, message, callback)
    outcome(request, "sent", message.sid)
    return json_response(message.render(now), 201)
