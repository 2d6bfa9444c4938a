"""Helpers shared by the provider simulators: JSON responses, ids, outcomes, form handling."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

from aiohttp import web

from sandbox.state import State


def state_of(request: web.Request) -> State:
    return request.app["state"]


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def override_response(
    body: Any, status: int, headers: dict[str, str] | None = None
) -> web.Response:
    """A fault answer with a caller-supplied body (JSON for dicts/lists, text otherwise)."""
    if isinstance(body, dict | list):
        return json_response(body, status, headers)
    return web.Response(
        status=status, text=str(body), content_type="application/json", headers=headers
    )


def outcome(request: web.Request, value: str, message_id: str | None = None) -> None:
    """Note what the sandbox did with this request in its recording."""
    entry = request.get("entry")
    if entry is not None:
        entry["outcome"] = value
        if message_id is not None:
            entry["message_id"] = message_id


def pairs_to_dict(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Collapse form/query pairs into a dict; a repeated name becomes a list of its values."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


def all_values(params: dict[str, Any], name: str) -> list[Any]:
    value = params.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def first_value(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def rfc2822(ts: float) -> str:
    return formatdate(ts, usegmt=False).replace("-0000", "+0000")


def url_safe_id(nbytes: int = 16) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode()


def bearer_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
