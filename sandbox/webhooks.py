"""Outgoing webhooks: posted in the background, bounded by a timeout, retried and recorded."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from sandbox.state import State

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
REFUSED = "refused: only 127.0.0.1/localhost callbacks are sent"
ORDERS = ("in_order", "reversed", "shuffled")

Signer = Callable[[bytes], dict[str, str]]


@dataclass(slots=True)
class Delivery:
    """One webhook POST: the bytes to send, fixed headers, and per-attempt signing headers."""

    provider: str
    kind: str
    url: str
    body: bytes
    headers: dict[str, str]
    sign: Signer
    signature_header: str
    message_id: str | None = None
    events: list[str] = field(default_factory=list)
    params: dict[str, str] | None = None
    # SendGrid retries any non-2xx; the others only 429, 5xx and transport errors.
    retry_any_failure: bool = False
    duplicate: bool = False


def is_local(url: str) -> bool:
    """Only loopback receivers are ever called."""
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


def arrange(
    state: State,
    plan: list[tuple[float, Delivery]],
    *,
    order: str | None = None,
    duplicate: bool = False,
) -> list[tuple[float, Delivery]]:
    """Apply the requested order (magic recipient, else `callback_order`) and duplicates
    (magic recipient, else `callback_duplicate_rate`) to a time-ordered plan: the times stay,
    what is posted at each time changes."""
    order = order or state.config["callback_order"]
    times = [at for at, _ in plan]
    items = [d for _, d in plan]
    if order == "reversed":
        items.reverse()
    elif order == "shuffled":
        random.shuffle(items)
    rate = 1.0 if duplicate else float(state.config["callback_duplicate_rate"])
    out: list[tuple[float, Delivery]] = []
    for at, item in zip(times, items, strict=True):
        out.append((at, item))
        if rate > 0 and random.random() < rate:
            out.append((at, replace(item, duplicate=True)))
    return out


def schedule(app: web.Application, plan: list[tuple[float, Delivery]]) -> None:
    """Record every delivery now (outcome `scheduled`, or refused for a non-loopback URL) and
    post them one after another at their times in a background task, never in the caller's
    request."""
    state: State = app["state"]
    entries = [_entry(state, delivery, at) for at, delivery in plan]
    if plan and not is_local(plan[0][1].url):
        for entry in entries:
            entry["outcome"] = REFUSED
        return
    if plan:
        state.spawn(_run(app, plan, entries))


async def _run(
    app: web.Application, plan: list[tuple[float, Delivery]], entries: list[dict[str, Any]]
) -> None:
    for (at, delivery), entry in zip(plan, entries, strict=True):
        await asyncio.sleep(max(0.0, at - time.time()))
        await deliver(app, delivery, entry)


def _entry(state: State, delivery: Delivery, due: float) -> dict[str, Any]:
    return state.record_callback(
        {
            "provider": delivery.provider,
            "kind": delivery.kind,
            "message_id": delivery.message_id,
            "events": list(delivery.events),
            "duplicate": delivery.duplicate,
            "method": "POST",
            "url": delivery.url,
            "headers": dict(delivery.headers),
            "body": delivery.body.decode("utf-8"),
            "params": delivery.params,
            "signature": None,
            "time": time.time(),
            "due": due,
            "status": None,
            "outcome": "scheduled",
            "attempts": [],
        }
    )


def _retryable(delivery: Delivery, status: int | None) -> bool:
    if status is None or status == 429 or status >= 500:
        return True
    return delivery.retry_any_failure and not 200 <= status < 300


async def deliver(
    app: web.Application, delivery: Delivery, entry: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST one delivery, retrying with a doubling delay; returns its recorded entry."""
    state: State = app["state"]
    entry = entry if entry is not None else _entry(state, delivery, time.time())
    entry["outcome"] = "pending"
    retries = int(state.config["callback_retries"])
    delay = float(state.config["callback_retry_delay_ms"]) / 1000
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(delay * 2 ** (attempt - 1))
        headers = {**delivery.headers, **delivery.sign(delivery.body)}
        entry["headers"] = headers
        entry["signature"] = headers.get(delivery.signature_header)
        status, result = await _post(app, delivery.url, delivery.body, headers)
        entry["attempts"].append({"time": time.time(), "status": status, "outcome": result})
        entry["status"], entry["outcome"] = status, result
        if not _retryable(delivery, status):
            break
    return entry


async def _post(
    app: web.Application, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int | None, str]:
    timeout = aiohttp.ClientTimeout(total=float(app["state"].config["callback_timeout_seconds"]))
    try:
        async with app["http"].post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as resp:
            await resp.read()
            return resp.status, "ok" if 200 <= resp.status < 300 else f"http_{resp.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, f"error: {type(exc).__name__}"


async def get(app: web.Application, url: str, params: dict[str, str]) -> tuple[int | None, str]:
    """A bounded GET (for verification handshakes): (status, body text) or (None, error)."""
    timeout = aiohttp.ClientTimeout(total=float(app["state"].config["callback_timeout_seconds"]))
    try:
        async with app["http"].get(
            url, params=params, timeout=timeout, allow_redirects=False
        ) as resp:
            return resp.status, await resp.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, f"error: {type(exc).__name__}"


async def replay(request: web.Request) -> web.Response:
    """POST /_sandbox/callbacks/{seq}/replay: post a recorded webhook again, byte for byte
    (same headers and signature), as a provider's duplicate; answers 202 with the new entry."""
    state: State = request.app["state"]
    seq = request.match_info["seq"]
    old = next((e for e in state.callbacks if str(e["seq"]) == seq), None)
    if old is None or old["method"] != "POST":
        return web.json_response({"error": f"no posted webhook with seq {seq}"}, status=404)
    headers = dict(old["headers"])
    delivery = Delivery(
        provider=old["provider"],
        kind=old["kind"],
        url=old["url"],
        body=old["body"].encode("utf-8"),
        headers=headers,
        sign=lambda _body: {},
        signature_header="",
        message_id=old["message_id"],
        events=list(old["events"]),
        params=old["params"],
        duplicate=True,
    )
    delivery.signature_header = next((h for h in headers if h.lower() in _SIGNATURE_HEADERS), "")
    plan = [(time.time(), delivery)]
    schedule(request.app, plan)
    return web.json_response(state.callbacks[-1], status=202)


_SIGNATURE_HEADERS = {
    "x-twilio-signature",
    "x-twilio-email-event-webhook-signature",
    "x-hub-signature-256",
}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_sandbox/callbacks/{seq}/replay", replay)
