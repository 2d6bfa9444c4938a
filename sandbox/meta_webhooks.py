"""Instagram webhooks: the hub.challenge handshake, then signed delivery and read events."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sandbox import webhooks
from sandbox.common import json_response, state_of
from sandbox.state import State

SLUG = "instagram"
SIGNATURE = "X-Hub-Signature-256"

MAGIC_UNREAD = "1001"
MAGIC_REORDERED = "1002"
MAGIC_DUPLICATED = "1003"


def sign(app_secret: str, body: bytes) -> str:
    """X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the app secret>."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def _payload(account: dict[str, Any], igsid: str, at: float, item: dict[str, Any]) -> bytes:
    ms = int(at * 1000)
    messaging = {
        "sender": {"id": igsid},
        "recipient": {"id": account["ig_id"]},
        "timestamp": ms,
        **item,
    }
    envelope = {
        "object": "instagram",
        "entry": [{"id": account["ig_id"], "time": ms, "messaging": [messaging]}],
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def schedule_events(
    app: web.Application, account: dict[str, Any], igsid: str, message_id: str
) -> None:
    """After a send: a `delivery` event, then (unless the recipient is 1001) `messaging_seen`."""
    state: State = app["state"]
    hook = state.meta_webhook
    if hook is None or not hook["verified"]:
        return
    items: list[tuple[str, dict[str, Any]]] = [("delivery", {"delivery": {"mids": [message_id]}})]
    if igsid != MAGIC_UNREAD:
        items.append(("messaging_seen", {"read": {"mid": message_id}}))
    low, high = state.config["callback_delay_ms"]
    secret = hook["app_secret"]
    at, plan = time.time(), []
    for name, item in items:
        at += random.uniform(low, high) / 1000
        plan.append(
            (
                at,
                webhooks.Delivery(
                    provider=SLUG,
                    kind="webhook",
                    url=hook["callback_url"],
                    body=_payload(account, igsid, at, item),
                    headers={"Content-Type": "application/json"},
                    sign=lambda body: {SIGNATURE: sign(secret, body)},
                    signature_header=SIGNATURE,
                    message_id=message_id,
                    events=[name],
                ),
            )
        )
    order = "reversed" if igsid == MAGIC_REORDERED else None
    arranged = webhooks.arrange(state, plan, order=order, duplicate=igsid == MAGIC_DUPLICATED)
    webhooks.schedule(app, arranged)


def _settings(hook: dict[str, Any] | None) -> dict[str, Any]:
    if hook is None:
        return {"callback_url": None, "verified": False}
    return {k: v for k, v in hook.items() if k != "app_secret"}


async def _handshake(app: web.Application, url: str, verify_token: str) -> dict[str, Any]:
    """GET url?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…; recorded like a callback."""
    challenge = str(secrets.randbelow(9 * 10**9) + 10**9)
    params = {"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": challenge}
    state: State = app["state"]
    entry = state.record_callback(
        {
            "provider": SLUG,
            "kind": "verification",
            "message_id": None,
            "events": ["verification"],
            "duplicate": False,
            "method": "GET",
            "url": url,
            "headers": {},
            "body": "",
            "params": params,
            "signature": None,
            "time": time.time(),
            "due": time.time(),
            "status": None,
            "outcome": "pending",
            "attempts": [],
        }
    )
    if not webhooks.is_local(url):
        entry["outcome"] = webhooks.REFUSED
        return entry
    status, text = await webhooks.get(app, url, params)
    entry["status"] = status
    entry["response"] = text[:1000]
    if status is None:
        entry["outcome"] = text
    elif status != 200 or text != challenge:
        entry["outcome"] = "challenge_mismatch" if status == 200 else f"http_{status}"
    else:
        entry["outcome"] = "ok"
    entry["attempts"].append({"time": time.time(), "status": status, "outcome": entry["outcome"]})
    return entry


async def subscribe(request: web.Request) -> web.Response:
    """Verify the callback like Meta's "Verify and save": only a verified URL is kept."""
    try:
        spec = await request.json()
    except ValueError:
        return json_response({"error": "body must be JSON"}, 400)
    fields = ("callback_url", "verify_token", "app_secret")
    if not isinstance(spec, dict) or not all(
        isinstance(spec.get(f), str) and spec[f] for f in fields
    ):
        return json_response({"error": f"{', '.join(fields)} are required strings"}, 400)
    url = spec["callback_url"]
    if urlsplit(url).scheme not in ("http", "https"):
        return json_response({"error": "callback_url must be an http(s) URL"}, 400)
    entry = await _handshake(request.app, url, spec["verify_token"])
    if entry["outcome"] != "ok":
        return json_response(
            {
                "error": "The URL couldn't be validated: the callback did not echo the challenge",
                "verified": False,
                "verification": entry,
            },
            400,
        )
    state = state_of(request)
    state.meta_webhook = {**{f: spec[f] for f in fields}, "verified": True, "time": time.time()}
    return json_response({**_settings(state.meta_webhook), "verification": entry})


async def get_subscription(request: web.Request) -> web.Response:
    return json_response(_settings(state_of(request).meta_webhook))


async def unsubscribe(request: web.Request) -> web.Response:
    state_of(request).meta_webhook = None
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_sandbox/instagram/webhook", subscribe)
    app.router.add_get("/_sandbox/instagram/webhook", get_subscription)
    app.router.add_delete("/_sandbox/instagram/webhook", unsubscribe)
