"""SendGrid Event Webhook: signed event batches for each accepted mail, and their control routes."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox import webhooks
from sandbox.accounts import AccountError, webhook_url
from sandbox.common import json_response, state_of, url_safe_id
from sandbox.state import State

SLUG = "sendgrid"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
KEY = "sendgrid_signing_key"
MAGIC_DOMAIN = "@sandbox.test"

_DEFAULT = ["processed", "delivered"]
# Magic recipient local parts (at sandbox.test) -> the events that recipient produces.
MAGIC_EVENTS: dict[str, list[str]] = {
    "bounce": ["processed", "bounce"],
    "blocked": ["processed", "bounce:blocked"],
    "dropped": ["dropped"],
    "deferred": ["processed", "deferred:1", "deferred:2", "delivered"],
    "engaged": ["processed", "delivered", "open", "click"],
    "spamreport": ["processed", "delivered", "spamreport"],
    "unsubscribe": ["processed", "delivered", "unsubscribe"],
    "reordered": ["processed", "delivered", "open"],
    "duplicate": _DEFAULT,
}
_USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"


def signing_key(path: str | None = None) -> ec.EllipticCurvePrivateKey:
    """The sandbox's P-256 signing key: loaded from a PEM file, else a fresh one per process."""
    if path:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the SendGrid signing key must be an EC (P-256) private key")
        return key
    return ec.generate_private_key(ec.SECP256R1())


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """Base64 DER SubjectPublicKeyInfo, the form SendGrid's settings show (MFkwEwYHKoZIzj0C…)."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signer(key: ec.EllipticCurvePrivateKey) -> webhooks.Signer:
    """Per attempt: ECDSA P-256 / SHA-256 over timestamp + raw body, base64 DER signature."""

    def sign(body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {SIGNATURE: base64.b64encode(signature).decode(), TIMESTAMP: timestamp}

    return sign


def _recipients(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(email, custom args) per recipient; personalization custom_args win over the message's."""
    base = body.get("custom_args") if isinstance(body.get("custom_args"), dict) else {}
    out = []
    for p in body.get("personalizations") or []:
        extra = p.get("custom_args") if isinstance(p.get("custom_args"), dict) else {}
        for kind in ("to", "cc", "bcc"):
            for r in p.get(kind) or []:
                out.append((r["email"], {**base, **extra}))
    return out


def _event(
    name: str, recipient: tuple[str, dict[str, Any]], at: float, sg_message_id: str, body: Any
) -> dict[str, Any]:
    event, _, detail = name.partition(":")
    email, args = recipient
    message_id = sg_message_id.partition(".")[0]
    # Custom args are top-level keys; SendGrid's own keys win over one of the same name.
    out: dict[str, Any] = {str(k): v for k, v in args.items()}
    out.update(
        {
            "email": email,
            "timestamp": int(at),
            "event": event,
            "sg_event_id": url_safe_id(16),
            "sg_message_id": sg_message_id,
            "smtp-id": f"<{message_id}@ismtpd0001p1sandbox.sendgrid.net>",
        }
    )
    categories = body.get("categories")
    if isinstance(categories, list) and categories:
        out["category"] = categories[0] if len(categories) == 1 else list(categories)
    out.update(_type_fields(event, detail))
    return out


def _type_fields(event: str, detail: str) -> dict[str, Any]:
    """Per-event fields; `detail` is the bounce type or the deferral attempt."""
    if event == "delivered":
        return {"response": "250 OK", "tls": 1, "ip": "149.72.0.1"}
    if event == "deferred":
        return {"response": "451 4.7.1 Try again later", "attempt": detail, "ip": "149.72.0.1"}
    if event == "bounce":
        reason = "550 5.1.1 The email account that you tried to reach does not exist."
        if detail == "blocked":
            reason = "550 5.7.1 Message rejected due to local policy"
        return {"reason": reason, "status": "5.1.1", "type": detail or "bounce"}
    if event == "dropped":
        return {"reason": "Bounced Address", "status": "5.0.0"}
    if event == "open":
        return {"useragent": _USER_AGENT, "ip": "203.0.113.7", "sg_machine_open": False}
    if event == "click":
        return {
            "url": "https://example.test/landing",
            "url_offset": {"index": 0, "type": "html"},
            "useragent": _USER_AGENT,
            "ip": "203.0.113.7",
        }
    return {}


def encode(events: list[dict[str, Any]]) -> bytes:
    """A JSON array with CRLF between events and at the end, as SendGrid's bodies are."""
    return ("[" + ",\r\n".join(json.dumps(e) for e in events) + "]\r\n").encode()


def _stages(recipients: list[tuple[str, dict[str, Any]]]) -> list[list[tuple[int, str]]]:
    """Batch i holds every recipient's i-th event as (recipient index, event name)."""
    names = [_names(email) for email, _ in recipients]
    depth = max((len(n) for n in names), default=0)
    return [[(i, n[k]) for i, n in enumerate(names) if k < len(n)] for k in range(depth)]


def _names(email: str) -> list[str]:
    local, _, domain = email.lower().partition("@")
    return MAGIC_EVENTS.get(local, _DEFAULT) if "@" + domain == MAGIC_DOMAIN else _DEFAULT


def _magic(recipients: list[tuple[str, dict[str, Any]]], name: str) -> bool:
    return any(email.lower() == name + MAGIC_DOMAIN for email, _ in recipients)


def schedule_events(
    app: web.Application, account: dict[str, Any], body: dict[str, Any], message_id: str
) -> None:
    """After a 202: post the mail's events in batches to the account's event webhook URL."""
    url = account.get("event_webhook_url")
    if not url:
        return
    state: State = app["state"]
    recipients = _recipients(body)
    low, high = state.config["callback_delay_ms"]
    at, plan = time.time(), []
    # One sg_message_id per recipient: the X-Message-Id plus a suffix.
    ids = [f"{message_id}.recvd-sandbox-1-{int(at):X}-{i}.0" for i in range(len(recipients))]
    for stage in _stages(recipients):
        at += random.uniform(low, high) / 1000
        events = [_event(n, recipients[i], at, ids[i], body) for i, n in stage]
        delivery = webhooks.Delivery(
            provider=SLUG,
            kind="event_webhook",
            url=url,
            body=encode(events),
            headers={"Content-Type": "application/json", "User-Agent": "SendGrid Event API"},
            sign=signer(app[KEY]),
            signature_header=SIGNATURE,
            message_id=message_id,
            events=[e["event"] for e in events],
            retry_any_failure=True,
        )
        plan.append((at, delivery))
    order = "reversed" if _magic(recipients, "reordered") else None
    duplicate = _magic(recipients, "duplicate")
    webhooks.schedule(app, webhooks.arrange(state, plan, order=order, duplicate=duplicate))


async def get_settings(request: web.Request) -> web.Response:
    accounts = state_of(request).accounts[SLUG].values()
    return json_response(
        {
            "public_key": public_key_b64(request.app[KEY]),
            "webhooks": [
                {"api_key": a["api_key"], "url": a["event_webhook_url"]}
                for a in accounts
                if a["event_webhook_url"]
            ],
        }
    )


async def set_settings(request: web.Request) -> web.Response:
    try:
        spec = await request.json()
    except ValueError:
        return json_response({"error": "body must be JSON"}, 400)
    if not isinstance(spec, dict) or not isinstance(spec.get("api_key"), str):
        return json_response({"error": "api_key is required"}, 400)
    account = state_of(request).accounts[SLUG].get(spec["api_key"])
    if account is None:
        return json_response({"error": "no sendgrid account with that api_key"}, 404)
    try:
        account["event_webhook_url"] = webhook_url(spec.get("url"))
    except AccountError as exc:
        return json_response({"error": str(exc).replace("event_webhook_url", "url")}, 400)
    url = account["event_webhook_url"]
    return json_response(
        {"url": url, "enabled": url is not None, "public_key": public_key_b64(request.app[KEY])}
    )


async def get_public_key(request: web.Request) -> web.Response:
    return json_response({"public_key": public_key_b64(request.app[KEY])})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sandbox/sendgrid/event-webhook", get_settings)
    app.router.add_post("/_sandbox/sendgrid/event-webhook", set_settings)
    app.router.add_get("/_sandbox/sendgrid/event-webhook/public-key", get_public_key)
