"""The aiohttp application: provider routes wrapped with recording, latency and faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from sandbox import (
    control,
    google,
    google_oauth,
    graph,
    instagram_oauth,
    meta_webhooks,
    sendgrid,
    sendgrid_events,
    telegram,
    twilio,
    webhooks,
)
from sandbox.common import pairs_to_dict
from sandbox.state import State

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 40 * 1024 * 1024


async def _parse_body(request: web.Request) -> Any:
    """The request body as a form dict, JSON value, text, or None when empty."""
    ctype = request.content_type
    if ctype == "multipart/form-data":
        form = await request.post()
        request["raw"] = b""
        return pairs_to_dict(
            (
                k,
                v
                if isinstance(v, str)
                else {"filename": v.filename, "content_type": v.content_type},
            )
            for k, v in form.items()
        )
    raw = await request.read()
    request["raw"] = raw
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if ctype == "application/x-www-form-urlencoded":
        return pairs_to_dict(parse_qsl(text, keep_blank_values=True))
    if ctype == "application/json" or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def provider_handler(module: ModuleType) -> Handler:
    """Wrap a provider's `handle` with body parsing, recording, latency and fault injection."""
    slug: str = module.SLUG

    async def handler(request: web.Request) -> web.StreamResponse:
        state: State = request.app["state"]
        request["query"] = pairs_to_dict(request.query.items())
        request["body"] = await _parse_body(request)
        entry = state.record(
            {
                "provider": slug,
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "query_params": request["query"],
                "headers": dict(request.headers),
                "body": request["body"],
                "time": time.time(),
                "status": None,
                "outcome": "pending",
                "message_id": None,
            }
        )
        request["entry"] = entry
        try:
            latency = state.config["latency_ms"]
            if latency:
                await asyncio.sleep(latency / 1000)
            fault = state.take_fault(slug, request.path)
            if fault is not None and fault.mode == "latency":
                await asyncio.sleep((fault.latency_ms or 0) / 1000)
            elif fault is not None and fault.mode == "timeout":
                entry["outcome"] = "timeout"
                await asyncio.sleep(state.config["timeout_hold_seconds"])
                if request.transport is not None:
                    request.transport.close()
                raise web.HTTPGatewayTimeout()
            elif fault is not None:
                assert fault.status is not None
                entry["outcome"] = f"fault:{fault.status}"
                response = module.fault_response(
                    request, fault.status, fault.retry_after, fault.body
                )
                entry["status"] = response.status
                return response
            response = await module.handle(request)
        except asyncio.CancelledError:
            if entry["outcome"] == "pending":
                entry["outcome"] = "client_disconnected"
            raise
        entry["status"] = response.status
        return response

    return handler


async def _on_startup(app: web.Application) -> None:
    app["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))


async def _on_cleanup(app: web.Application) -> None:
    app["state"].reset()
    await app["http"].close()


def build_app(
    config: dict[str, Any] | None = None,
    accounts: list[Any] | None = None,
    sendgrid_signing_key: str | None = None,
) -> web.Application:
    """The sandbox application; `config` overrides DEFAULT_CONFIG, `accounts` are preloaded,
    `sendgrid_signing_key` is a PEM file with the Event Webhook's P-256 key (else a fresh one)."""
    app = web.Application(client_max_size=MAX_BODY)
    app["state"] = State(config or {}, accounts)
    app[sendgrid_events.KEY] = sendgrid_events.signing_key(sendgrid_signing_key)
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    control.add_routes(app)
    sendgrid_events.add_routes(app)
    meta_webhooks.add_routes(app)
    webhooks.add_routes(app)
    app.router.add_route("*", "/2010-04-01/{tail:.*}", provider_handler(twilio))
    app.router.add_route("*", "/v3/{tail:.*}", provider_handler(sendgrid))
    app.router.add_route("*", "/{tail:bot.*}", provider_handler(telegram))
    app.router.add_route("*", r"/{version:v\d+\.\d+}/{tail:.*}", provider_handler(graph))
    app.router.add_route("*", "/calendar/v3/{tail:.*}", provider_handler(google))
    app.router.add_route("*", google.TOKEN_PATH, provider_handler(google))
    app.router.add_route("*", google_oauth.AUTHORIZE_PATH, provider_handler(google_oauth))
    app.router.add_route("*", google_oauth.REVOKE_PATH, provider_handler(google_oauth))
    for path in instagram_oauth.PATHS:
        app.router.add_route("*", path, provider_handler(instagram_oauth))
    return app
