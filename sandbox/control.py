"""The /_sandbox/* control API: accounts, config, faults, recordings, callbacks, reset, health."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from sandbox.accounts import AccountError, content_template
from sandbox.common import json_response, state_of
from sandbox.state import PROVIDERS, ConfigError


def _credential(authorization: str) -> str:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return value.strip()
    try:
        return base64.b64decode(value.strip(), validate=True).decode(errors="replace")
    except (binascii.Error, ValueError):
        return value.strip()


def echo_request(request: web.Request, body: Any) -> Any:
    """A fault `body` with `{authorization}`, `{credential}` and `{path}` (each optionally
    `|urlencode` or `|base64`) replaced by what this request carried, as a careless API or
    proxy echoes it: the header as sent, the decoded credential (`sid:token`, a bearer token)
    and the raw path (Telegram's holds the bot token)."""
    if isinstance(body, dict):
        return {key: echo_request(request, value) for key, value in body.items()}
    if isinstance(body, list):
        return [echo_request(request, value) for value in body]
    if not isinstance(body, str) or "{" not in body:
        return body
    authorization = request.headers.get("Authorization", "")
    values = {
        "authorization": authorization,
        "credential": _credential(authorization),
        "path": request.raw_path.partition("?")[0],
    }
    for name, value in values.items():
        body = body.replace(f"{{{name}|urlencode}}", quote(value, safe=""))
        body = body.replace(f"{{{name}|base64}}", base64.b64encode(value.encode()).decode())
        body = body.replace(f"{{{name}}}", value)
    return body


def _bad(message: str) -> web.Response:
    return json_response({"error": message}, 400)


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body must be JSON: {exc}"}), content_type="application/json"
        ) from None


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def add_accounts(request: web.Request) -> web.Response:
    spec = await _json(request)
    try:
        registered = state_of(request).add_accounts(spec if isinstance(spec, list) else [spec])
    except AccountError as exc:
        return _bad(str(exc))
    return json_response(registered if isinstance(spec, list) else registered[0], 201)


async def list_accounts(request: web.Request) -> web.Response:
    state = state_of(request)
    return json_response([a for p in PROVIDERS for a in state.accounts[p].values()])


async def get_config(request: web.Request) -> web.Response:
    return json_response(state_of(request).config)


async def set_config(request: web.Request) -> web.Response:
    settings = await _json(request)
    if not isinstance(settings, dict):
        return _bad("config must be a JSON object")
    try:
        return json_response(state_of(request).update_config(settings))
    except ConfigError as exc:
        return _bad(str(exc))


async def add_fault(request: web.Request) -> web.Response:
    spec = await _json(request)
    if not isinstance(spec, dict):
        return _bad("a fault must be a JSON object")
    try:
        fault = state_of(request).add_fault(spec)
    except ConfigError as exc:
        return _bad(str(exc))
    return json_response(fault.as_dict(), 201)


async def list_faults(request: web.Request) -> web.Response:
    return json_response([f.as_dict() for f in state_of(request).faults])


async def clear_faults(request: web.Request) -> web.Response:
    state_of(request).faults.clear()
    return web.Response(status=204)


async def delete_fault(request: web.Request) -> web.Response:
    state = state_of(request)
    before = len(state.faults)
    state.faults[:] = [f for f in state.faults if f.id != request.match_info["fault_id"]]
    return web.Response(status=204 if len(state.faults) < before else 404)


def _filtered(request: web.Request, entries: Any) -> list[dict[str, Any]] | web.Response:
    provider = request.query.get("provider")
    if provider is not None and provider not in PROVIDERS:
        return _bad(f"provider must be one of {list(PROVIDERS)}")
    try:
        since = int(request.query.get("since", 0))
    except ValueError:
        return _bad("since must be an integer sequence number")
    return [
        e for e in entries if e["seq"] > since and (provider is None or e["provider"] == provider)
    ]


async def list_requests(request: web.Request) -> web.Response:
    result = _filtered(request, state_of(request).records)
    return result if isinstance(result, web.Response) else json_response(result)


async def clear_requests(request: web.Request) -> web.Response:
    state_of(request).records.clear()
    return web.Response(status=204)


async def list_callbacks(request: web.Request) -> web.Response:
    result = _filtered(request, state_of(request).callbacks)
    return result if isinstance(result, web.Response) else json_response(result)


async def clear_callbacks(request: web.Request) -> web.Response:
    state_of(request).callbacks.clear()
    return web.Response(status=204)


_WHATSAPP_ADDRESS = re.compile(r"whatsapp:\+[1-9]\d{6,14}")


def _seconds_ago(spec: dict[str, Any]) -> float | None:
    value = spec.get("seconds_ago", 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return time.time() - value


async def add_whatsapp_template(request: web.Request) -> web.Response:
    spec = await _json(request)
    if not isinstance(spec, dict):
        return _bad("a template must be a JSON object")
    account = state_of(request).accounts["whatsapp"].get(spec.get("account_sid"))  # type: ignore[arg-type]
    if account is None:
        return json_response({"error": "unknown whatsapp account_sid"}, 404)
    try:
        template = content_template({k: spec.get(k) for k in ("sid", "body", "variables")})
    except AccountError as exc:
        return _bad(str(exc))
    others = [t for t in account["content_templates"] if t["sid"] != template["sid"]]
    account["content_templates"] = [*others, template]
    return json_response({"account_sid": account["account_sid"], **template}, 201)


async def whatsapp_inbound(request: web.Request) -> web.Response:
    """A customer's inbound WhatsApp message: opens the 24-hour window for (sender, customer)."""
    spec = await _json(request)
    if not isinstance(spec, dict):
        return _bad("an inbound message must be a JSON object")
    state = state_of(request)
    account = state.accounts["whatsapp"].get(spec.get("account_sid"))  # type: ignore[arg-type]
    if account is None:
        return json_response({"error": "unknown whatsapp account_sid"}, 404)
    customer, sender = spec.get("from"), spec.get("to")
    if not isinstance(customer, str) or not _WHATSAPP_ADDRESS.fullmatch(customer):
        return _bad("from must be the customer's whatsapp:+E164 address")
    if sender is not None and sender not in account["senders"]:
        return _bad("to must be one of the account's senders (omit it for all of them)")
    at = _seconds_ago(spec)
    if at is None:
        return _bad("seconds_ago must be a non-negative number")
    key = (account["account_sid"], sender or "*", customer)
    state.whatsapp_inbound[key] = max(at, state.whatsapp_inbound.get(key, 0.0))
    body = {"account_sid": key[0], "from": customer, "to": sender, "received_at": at}
    return json_response(body, 201)


async def instagram_inbound(request: web.Request) -> web.Response:
    """An Instagram user's message to the account: opens its window for that user."""
    spec = await _json(request)
    if not isinstance(spec, dict):
        return _bad("an inbound message must be a JSON object")
    state = state_of(request)
    ig_id, sender = str(spec.get("ig_id") or ""), spec.get("sender_id")
    if not any(a["ig_id"] == ig_id for a in state.accounts["instagram"].values()):
        return json_response({"error": "unknown instagram ig_id"}, 404)
    if isinstance(sender, int) and not isinstance(sender, bool):
        sender = str(sender)
    if not isinstance(sender, str) or not sender.isdigit():
        return _bad("sender_id must be the user's numeric IGSID")
    at = _seconds_ago(spec)
    if at is None:
        return _bad("seconds_ago must be a non-negative number")
    key = (ig_id, sender)
    state.instagram_inbound[key] = max(at, state.instagram_inbound.get(key, 0.0))
    return json_response({"ig_id": ig_id, "sender_id": sender, "received_at": at}, 201)


async def google_expire_tokens(request: web.Request) -> web.Response:
    """Every Google access token issued so far expires now (the sandbox's token clock)."""
    state = state_of(request)
    now = time.monotonic()
    expired = 0
    for token in state.google_token_expiry:
        state.google_token_expiry[token] = now - 1
        expired += 1
    return json_response({"expired": expired})


async def google_revoke_all(request: web.Request) -> web.Response:
    """The user removes the app's access at Google: every OAuth-issued refresh token (and the
    access tokens it gave) stops working."""
    from sandbox.google_oauth import revoke_refresh_token

    state = state_of(request)
    tokens = list(state.google_refresh_tokens)
    for refresh in tokens:
        revoke_refresh_token(state, refresh)
    return json_response({"revoked": len(tokens)})


async def reset(request: web.Request) -> web.Response:
    state_of(request).reset()
    return json_response({"status": "reset"})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/_sandbox/health", health)
    r.add_post("/_sandbox/accounts", add_accounts)
    r.add_get("/_sandbox/accounts", list_accounts)
    r.add_get("/_sandbox/config", get_config)
    r.add_post("/_sandbox/config", set_config)
    r.add_post("/_sandbox/faults", add_fault)
    r.add_get("/_sandbox/faults", list_faults)
    r.add_delete("/_sandbox/faults", clear_faults)
    r.add_delete("/_sandbox/faults/{fault_id}", delete_fault)
    r.add_get("/_sandbox/requests", list_requests)
    r.add_delete("/_sandbox/requests", clear_requests)
    r.add_get("/_sandbox/callbacks", list_callbacks)
    r.add_delete("/_sandbox/callbacks", clear_callbacks)
    r.add_post("/_sandbox/whatsapp/templates", add_whatsapp_template)
    r.add_post("/_sandbox/whatsapp/inbound", whatsapp_inbound)
    r.add_post("/_sandbox/instagram/inbound", instagram_inbound)
    r.add_post("/_sandbox/google/expire_tokens", google_expire_tokens)
    r.add_post("/_sandbox/google/revoke_all", google_revoke_all)
    r.add_post("/_sandbox/reset", reset)
