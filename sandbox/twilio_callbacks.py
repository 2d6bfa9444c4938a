"""Twilio status callbacks: the status plan per recipient, the form fields and X-Twilio-Signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from sandbox import webhooks
from sandbox.state import State

if TYPE_CHECKING:
    from sandbox.twilio import Message

API_VERSION = "2010-04-01"

MAGIC_FAILED = "+15005550003"
MAGIC_UNDELIVERED = "+15005550004"
MAGIC_READ = "+15005550005"
MAGIC_UNKNOWN_ERROR = "+15005550006"
MAGIC_REORDERED = "+15005550007"
MAGIC_DUPLICATED = "+15005550008"

ASYNC_ERRORS = {
    63016: "Failed to send freeform message because you are outside the allowed window. "
    "If you are using WhatsApp, please use a Message Template.",
    63018: "Rate limit exceeded for Channel",
    63021: "Channel invalid content error",
    63028: "Number of parameters provided does not match the expected number of parameters",
    30008: "Unknown error",
}

_READ_PLAN: list[tuple[str, int | None]] = [("sent", None), ("delivered", None), ("read", None)]
_PLANS: dict[str, list[tuple[str, int | None]]] = {
    MAGIC_FAILED: [("failed", 63016)],
    MAGIC_UNDELIVERED: [("sent", None), ("undelivered", 63018)],
    MAGIC_READ: _READ_PLAN,
    MAGIC_UNKNOWN_ERROR: [("sent", None), ("undelivered", 30008)],
    MAGIC_REORDERED: _READ_PLAN,
    MAGIC_DUPLICATED: _READ_PLAN,
}


def plan_steps(
    state: State,
    message: Message,
    start: float,
    plan: list[tuple[str, int | None]] | None = None,
) -> None:
    """Fill `message.steps`: the status timeline after `start`, one random gap per step.
    `plan` overrides the recipient's plan (an asynchronous failure such as 63016)."""
    low, high = state.config["callback_delay_ms"]
    number = message.to.removeprefix("whatsapp:")
    t = start
    if plan is None:
        plan = _PLANS.get(number, [("sent", None), ("delivered", None)])
    for status, code in plan:
        t += random.uniform(low, high) / 1000
        message.steps.append((t, status, code))


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 over the URL followed by sorted name+value pairs."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def callback_params(message: Message, status: str, code: int | None) -> dict[str, str]:
    """The form fields Twilio posts for one status of a message."""
    params = {
        "MessageSid": message.sid,
        "MessageStatus": status,
        "SmsSid": message.sid,
        "SmsStatus": status,
        "AccountSid": message.account_sid,
        "To": message.to,
        "ApiVersion": API_VERSION,
    }
    if message.from_:
        params["From"] = message.from_
    if message.messaging_service_sid:
        params["MessagingServiceSid"] = message.messaging_service_sid
    if message.to.startswith("whatsapp:"):
        install = hashlib.md5(message.account_sid.encode(), usedforsecurity=False).hexdigest()
        params["ChannelPrefix"] = "whatsapp"
        params["ChannelInstallSid"] = "XE" + install
        params["ChannelToAddress"] = message.to.removeprefix("whatsapp:")
        if status in ("delivered", "undelivered", "read"):
            params["EventType"] = status.upper()
    if code is not None:
        params["ErrorCode"] = str(code)
        params["ChannelStatusMessage"] = ASYNC_ERRORS.get(code, "")
    return params


def _delivery(
    account: dict[str, Any], message: Message, url: str, status: str, code: int | None
) -> webhooks.Delivery:
    params = callback_params(message, status, code)
    signature = sign(account["auth_token"], url, params)
    return webhooks.Delivery(
        provider="whatsapp",
        kind="status_callback",
        url=url,
        body=urlencode(params).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        },
        sign=lambda _body: {"X-Twilio-Signature": signature},
        signature_header="X-Twilio-Signature",
        message_id=message.sid,
        events=[status],
        params=params,
    )


def schedule_callbacks(
    app: web.Application, account: dict[str, Any], message: Message, url: str
) -> None:
    """Post one signed callback per step of the message (none for the initial status)."""
    plan = [(at, _delivery(account, message, url, s, c)) for at, s, c in message.steps]
    number = message.to.removeprefix("whatsapp:")
    order = "reversed" if number == MAGIC_REORDERED else None
    arranged = webhooks.arrange(
        app["state"], plan, order=order, duplicate=number == MAGIC_DUPLICATED
    )
    webhooks.schedule(app, arranged)
