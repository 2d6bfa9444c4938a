"""Instagram API with Instagram Login: authorize (auto-consent, or "deny"), the code exchange
for a short-lived token, ig_exchange_token for a long-lived one, ig_refresh_token, and the
permission delete. Issued tokens work on the Graph endpoints of graph.py."""

from __future__ import annotations

import hmac
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from sandbox.common import json_response, outcome, override_response, state_of, url_safe_id
from sandbox.control import echo_request
from sandbox.state import State

SLUG = "instagram"
AUTHORIZE_PATH = "/oauth/authorize"
CODE_PATH = "/oauth/access_token"
EXCHANGE_PATH = "/access_token"
REFRESH_PATH = "/refresh_access_token"
PATHS = (AUTHORIZE_PATH, CODE_PATH, EXCHANGE_PATH, REFRESH_PATH)
CODE_TTL = 600.0
SHORT_TTL = 3600.0


def _oauth_error(message: str, status: int = 400) -> web.Response:
    # api.instagram.com's own shape (the Graph endpoints answer {"error": {...}}).
    return json_response(
        {"error_type": "OAuthException", "code": status, "error_message": message}, status
    )


def _graph_error(message: str, code: int = 190, status: int = 400) -> web.Response:
    return json_response(
        {"error": {"message": message, "type": "OAuthException", "code": code}}, status
    )


def fault_response(
    request: web.Request, status: int, retry_after: float | None, body: Any
) -> web.Response:
    if body is not None:
        return override_response(echo_request(request, body), status)
    return _graph_error("An unexpected error has occurred.", code=2, status=status)


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    if request.path == AUTHORIZE_PATH:
        return _authorize(state, request)
    if request.path == CODE_PATH:
        return _code(state, request)
    return _long_lived(state, request, refresh=request.path == REFRESH_PATH)


def _apps(state: State, app_id: str) -> list[dict[str, Any]]:
    return [a for a in state.accounts[SLUG].values() if app_id and a.get("app_id") == app_id]


def _authorize(state: State, request: web.Request) -> web.Response:
    q = request["query"]
    app_id, redirect_uri = str(q.get("client_id") or ""), str(q.get("redirect_uri") or "")
    accounts = _apps(state, app_id)
    if not accounts:
        outcome(request, "invalid_client")
        return _oauth_error("Invalid platform app")
    if urlsplit(redirect_uri).scheme not in ("http", "https") or q.get("response_type") != "code":
        outcome(request, "invalid_request")
        return _oauth_error("Invalid redirect_uri or response_type")
    back = {"state": str(q["state"])} if q.get("state") else {}
    if state.config["instagram_oauth_consent"] == "deny":
        outcome(request, "consent_denied")
        params = {
            "error": "access_denied",
            "error_reason": "user_denied",
            "error_description": "The user denied your request.",
            **back,
        }
        return web.Response(status=302, headers={"Location": f"{redirect_uri}?{urlencode(params)}"})
    code = "AQ" + url_safe_id(48)
    state.instagram_codes[code] = {
        "account": accounts[0],
        "app_id": app_id,
        "redirect_uri": redirect_uri,
        "expires": time.monotonic() + CODE_TTL,
    }
    outcome(request, "consent_granted")
    location = f"{redirect_uri}?{urlencode({'code': code, **back})}#_"
    return web.Response(status=302, headers={"Location": location})


def _issue(state: State, account: dict[str, Any], kind: str, ttl: float) -> str:
    token = "IGAA" + url_safe_id(96 if kind == "long" else 48)
    state.instagram_tokens[token] = {
        "account": account,
        "kind": kind,
        "issued": time.time(),
        "expires": time.time() + ttl,
    }
    return token


def _code(state: State, request: web.Request) -> web.Response:
    if request.method != "POST":
        outcome(request, "invalid_request")
        return _oauth_error("Unsupported method", 405)
    params = request["body"] if isinstance(request["body"], dict) else {}
    accounts = _apps(state, str(params.get("client_id") or ""))
    secret = str(params.get("client_secret") or "")
    if not accounts or not hmac.compare_digest(accounts[0]["app_secret"] or "", secret):
        outcome(request, "invalid_client")
        return _oauth_error("Error validating client secret.")
    grant = state.instagram_codes.pop(str(params.get("code") or ""), None)
    if (
        grant is None
        or grant["expires"] < time.monotonic()
        or grant["app_id"] != params.get("client_id")
        or params.get("grant_type") != "authorization_code"
    ):
        outcome(request, "invalid_grant")
        return _oauth_error("This authorization code has been used")
    if params.get("redirect_uri") != grant["redirect_uri"]:
        outcome(request, "redirect_uri_mismatch")
        return _oauth_error("Error validating verification code. Please make sure your "
                            "redirect_uri is identical to the one you used in the OAuth dialog "
                            "request")  # fmt: skip
    account = grant["account"]
    token = _issue(state, account, "short", SHORT_TTL)
    outcome(request, "code_exchanged")
    return json_response(
        {
            "data": [
                {
                    "access_token": token,
                    "user_id": account["ig_id"],
                    "permissions": "instagram_business_basic,instagram_business_manage_messages",
                }
            ]
        }
    )


def _long_lived(state: State, request: web.Request, *, refresh: bool) -> web.Response:
    q = request["query"]
    token = str(q.get("access_token") or "")
    issued = state.instagram_tokens.get(token)
    if issued is None or issued["expires"] < time.time():
        outcome(request, "auth_failed")
        return _graph_error("Error validating access token: Session has expired or is invalid.")
    ttl = float(state.config["instagram_token_ttl_seconds"])
    if refresh:
        if q.get("grant_type") != "ig_refresh_token" or issued["kind"] != "long":
            outcome(request, "invalid_request")
            return _graph_error("Unsupported grant_type or token", code=100)
        if time.time() - issued["issued"] < state.config["instagram_refresh_min_age_seconds"]:
            outcome(request, "too_young")
            return _graph_error("The access token must be at least 24 hours old.", code=100)
        del state.instagram_tokens[token]
        new = _issue(state, issued["account"], "long", ttl)
        outcome(request, "token_refreshed")
    else:
        account = issued["account"]
        secret = str(q.get("client_secret") or "")
        if q.get("grant_type") != "ig_exchange_token" or issued["kind"] != "short":
            outcome(request, "invalid_request")
            return _graph_error("Unsupported grant_type or token", code=100)
        if not hmac.compare_digest(account["app_secret"] or "", secret):
            outcome(request, "invalid_client")
            return _graph_error("Error validating client secret.", code=1)
        del state.instagram_tokens[token]
        new = _issue(state, account, "long", ttl)
        outcome(request, "token_exchanged")
    return json_response({"access_token": new, "token_type": "bearer", "expires_in": int(ttl)})


def graph_account(state: State, token: str) -> dict[str, Any] | None:
    """The account of a long-lived token this module issued, while it is valid."""
    issued = state.instagram_tokens.get(token)
    if issued is None or issued["kind"] != "long" or issued["expires"] < time.time():
        return None
    return issued["account"]


def revoke(state: State, token: str) -> bool:
    """DELETE /me/permissions: every token issued to this token's account stops working."""
    issued = state.instagram_tokens.get(token)
    if issued is None:
        return False
    account = issued["account"]
    for other in [t for t, i in state.instagram_tokens.items() if i["account"] is account]:
        del state.instagram_tokens[other]
    return True
