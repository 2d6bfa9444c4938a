"""Twilio Programmable Messaging (WhatsApp) simulator: accounts and messages (callbacks apart)."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sandbox import twilio_callbacks
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
    callback = first_value(params, "StatusCallback")

    def reject(code: int, message: str, label: str) -> web.Response:
        outcome(request, label)
        return error(code, message, 400)

    if not to:
        return reject(21604, "A 'To' phone number is required.", "invalid_request")
    if not from_ and not service:
        return reject(21603, "A 'From' phone number is required.", "invalid_request")
    if not body and not media and not content_sid:
        return reject(21602, "Message body is required.", "invalid_request")
    if len(body) > 1600:
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

    return _accept(state, request, account, params)


def _accept(
    state: State, request: web.Request, account: dict[str, Any], params: dict[str, Any]
) -> web.Response:
    """Store a valid send as a queued message, plan its statuses and schedule its callbacks."""
    from_ = first_value(params, "From")
    service = first_value(params, "MessagingServiceSid")
    callback = first_value(params, "StatusCallback")
    now = time.time()
    message = Message(
        sid="SM" + uuid.uuid4().hex,
        account_sid=account["account_sid"],
        to=first_value(params, "To"),
        from_=from_ or None,
        body=first_value(params, "Body") or "",
        num_media=len(all_values(params, "MediaUrl")),
        messaging_service_sid=service or None,
        created=now,
        initial="accepted" if service and not from_ else "queued",
    )
    # Twilio queues (never rejects) sends above the sender's MPS; model that as later transitions.
    sender = from_ or service
    t = max(now, state.twilio_sender_slots.get(sender, 0.0))
    state.twilio_sender_slots[sender] = t + 1.0 / state.config["whatsapp_sender_mps"]
    twilio_callbacks.plan_steps(state, message, t)
    state.twilio_messages[message.sid] = message
    if callback:
        twilio_callbacks.schedule_callbacks(request.app, account, message, callback)
    outcome(request, "sent", message.sid)
    return json_response(message.render(now), 201)
