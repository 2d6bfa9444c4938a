"""Google OAuth 2.0 for web-server apps: the authorize endpoint (auto-consent, or "deny"), the
token endpoint's code exchange with PKCE checking, and revocation (the refresh grant is in
google.py). Access tokens expire on the sandbox's clock: `google_token_ttl_seconds`, and
POST /_sandbox/google/expire_tokens expires every one at once."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from sandbox.common import json_response, outcome, override_response, state_of, url_safe_id
from sandbox.control import echo_request
from sandbox.state import State

SLUG = "google_calendar"
AUTHORIZE_PATH = "/o/oauth2/v2/auth"
REVOKE_PATH = "/revoke"
CODE_TTL = 600.0
_NO_STORE = {
    "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
    "Pragma": "no-cache",
}


def oauth_error(status: int, code: str, description: str) -> web.Response:
    return json_response({"error": code, "error_description": description}, status, _NO_STORE)


def fault_response(
    request: web.Request, status: int, retry_after: float | None, body: Any
) -> web.Response:
    if body is not None:
        return override_response(echo_request(request, body), status)
    if request.path == REVOKE_PATH:
        return oauth_error(status, "invalid_token", "Token expired or revoked")
    return oauth_error(status, "server_error", "The service is temporarily unavailable.")


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    if request.path == AUTHORIZE_PATH:
        return _authorize(state, request)
    return _revoke(state, request)


def _redirect(uri: str, params: dict[str, str]) -> web.Response:
    separator = "&" if "?" in uri else "?"
    return web.Response(status=302, headers={"Location": f"{uri}{separator}{urlencode(params)}"})


def _authorize(state: State, request: web.Request) -> web.Response:
    """Google's consent page, answered at once: consent (or, with google_oauth_consent "deny",
    refusal) as the account named by login_hint or the first account of the client."""
    q = request["query"]
    client_id, redirect_uri = str(q.get("client_id") or ""), str(q.get("redirect_uri") or "")
    accounts = [a for a in state.accounts[SLUG].values() if a["client_id"] == client_id]
    if not client_id or not accounts:
        outcome(request, "invalid_client")
        return oauth_error(401, "invalid_client", "The OAuth client was not found.")
    if urlsplit(redirect_uri).scheme not in ("http", "https"):
        outcome(request, "invalid_request")
        return oauth_error(400, "redirect_uri_mismatch", "Invalid redirect_uri.")
    if q.get("response_type") != "code":
        outcome(request, "invalid_request")
        return oauth_error(400, "unsupported_response_type", "response_type must be code")
    method = str(q.get("code_challenge_method") or ("S256" if q.get("code_challenge") else ""))
    if method not in ("", "S256", "plain"):
        outcome(request, "invalid_request")
        return oauth_error(400, "invalid_request", "Invalid code_challenge_method.")
    back = {"state": str(q["state"])} if q.get("state") else {}
    if state.config["google_oauth_consent"] == "deny":
        outcome(request, "consent_denied")
        return _redirect(redirect_uri, {"error": "access_denied", **back})
    hint = q.get("login_hint")
    account = next((a for a in accounts if a["email"] == hint), accounts[0])
    code = "4/0" + url_safe_id(48)
    scope = state.config["google_oauth_granted_scope"] or str(q.get("scope") or account["scope"])
    state.google_codes[code] = {
        "account": account,
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "challenge": str(q.get("code_challenge") or ""),
        "method": method,
        "scope": scope,
        "offline": q.get("access_type") == "offline",
        "expires": time.monotonic() + CODE_TTL,
    }
    outcome(request, "consent_granted")
    return _redirect(redirect_uri, {**back, "code": code, "scope": scope, "authuser": "0"})


def client_credentials(request: web.Request, params: dict[str, Any]) -> tuple[str, str]:
    """(client_id, client_secret) from `Authorization: Basic` or, failing that, the form."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, ValueError):
            decoded = ""
        client_id, _, secret = decoded.partition(":")
        if client_id:
            return client_id, secret
    return str(params.get("client_id") or ""), str(params.get("client_secret") or "")


def _challenge(verifier: str, method: str) -> str:
    if method == "plain":
        return verifier
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue_access_token(state: State, account: dict[str, Any], parent: str | None) -> str:
    """A new access token for `account`, expiring after google_token_ttl_seconds."""
    token = "ya29.a0" + url_safe_id(96)
    state.google_tokens[token] = account
    state.google_token_expiry[token] = time.monotonic() + state.config["google_token_ttl_seconds"]
    if parent:
        state.google_token_parent[token] = parent
    return token


def code_exchange(state: State, request: web.Request, params: dict[str, Any]) -> web.Response:
    """grant_type=authorization_code: single-use code, same client and redirect_uri, PKCE."""
    client_id, secret = client_credentials(request, params)
    clients = [a for a in state.accounts[SLUG].values() if a["client_id"] == client_id]
    if not client_id or not clients:
        outcome(request, "invalid_client")
        return oauth_error(401, "invalid_client", "The OAuth client was not found.")
    if not any(hmac.compare_digest(a["client_secret"] or "", secret) for a in clients):
        outcome(request, "invalid_client")
        return oauth_error(401, "invalid_client", "Unauthorized")
    grant = state.google_codes.pop(str(params.get("code") or ""), None)
    if grant is None or grant["expires"] < time.monotonic() or grant["client_id"] != client_id:
        outcome(request, "invalid_grant")
        return oauth_error(400, "invalid_grant", "Malformed auth code.")
    if params.get("redirect_uri") != grant["redirect_uri"]:
        outcome(request, "redirect_uri_mismatch")
        return oauth_error(400, "redirect_uri_mismatch", "Bad Request")
    if grant["challenge"]:
        verifier = str(params.get("code_verifier") or "")
        if not verifier:
            outcome(request, "pkce_missing")
            return oauth_error(400, "invalid_grant", "Missing code verifier.")
        if not hmac.compare_digest(_challenge(verifier, grant["method"]), grant["challenge"]):
            outcome(request, "pkce_mismatch")
            return oauth_error(400, "invalid_grant", "Invalid code verifier.")
    account = grant["account"]
    body: dict[str, Any] = {
        "expires_in": int(state.config["google_token_ttl_seconds"]),
        "scope": grant["scope"],
        "token_type": "Bearer",
    }
    refresh = None
    if grant["offline"] and state.config["google_oauth_refresh_token"]:
        refresh = "1//0" + url_safe_id(64)
        state.google_refresh_tokens[refresh] = {"account": account, "client_id": client_id}
        body["refresh_token"] = refresh
    body["access_token"] = issue_access_token(state, account, refresh)
    outcome(request, "code_exchanged")
    return json_response(body, 200, _NO_STORE)


def revoke_refresh_token(state: State, refresh: str) -> None:
    """Forget a refresh token and every access token it gave."""
    state.google_refresh_tokens.pop(refresh, None)
    state.google_revoked.add(refresh)
    for token in [t for t, p in state.google_token_parent.items() if p == refresh]:
        state.google_tokens.pop(token, None)
        state.google_token_expiry.pop(token, None)
        state.google_token_parent.pop(token, None)


def _revoke(state: State, request: web.Request) -> web.Response:
    if request.method != "POST":
        outcome(request, "invalid_request")
        return oauth_error(405, "invalid_request", "Method not allowed")
    params = request["body"] if isinstance(request["body"], dict) else {}
    token = str(params.get("token") or request["query"].get("token") or "")
    registered = any(a["refresh_token"] == token for a in state.accounts[SLUG].values())
    if token in state.google_refresh_tokens or (registered and token not in state.google_revoked):
        revoke_refresh_token(state, token)
    elif token in state.google_tokens:
        # Revoking an access token also revokes the refresh token it came from.
        parent = state.google_token_parent.get(token)
        if parent:
            revoke_refresh_token(state, parent)
        state.google_tokens.pop(token, None)
        state.google_token_expiry.pop(token, None)
    else:
        outcome(request, "invalid_token")
        return oauth_error(400, "invalid_token", "Token expired or revoked")
    outcome(request, "revoked")
    return json_response({}, 200)
