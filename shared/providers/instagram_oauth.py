"""Instagram API with Instagram Login (Business Login): the authorization URL, the code →
short-lived → long-lived token exchanges, the 60-day refresh, the account lookup and the
permission delete (revocation).

Endpoints and the app's id and secret are arguments; nothing here reads settings or the
database. Errors are ProviderError whose messages never carry a code or a token (request
URLs hold the token in their query, so exception texts are never passed on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests

from .base import ProviderError

SLUG = "instagram"
SCOPES = ("instagram_business_basic", "instagram_business_manage_messages")
# Meta: "Error validating access token" (expired, revoked, password changed).
_INVALID_TOKEN = {190}
# Codes that come back as transient on the Graph API (see instagram.py).
_TRANSIENT = {1, 2, 4, 17, 32, 613, 80002}


@dataclass(frozen=True)
class InstagramToken:
    """A long-lived Instagram User access token and its aware UTC expiry."""

    access_token: str
    expiry: datetime


def _error(message: str, *, kind: str, code: str | None = None, status: int | None = None) -> ProviderError:  # fmt: skip
    return ProviderError(message, kind=kind, provider=SLUG, code=code, status=status)


@dataclass(frozen=True)
class InstagramOAuthClient:
    """The deployment's Meta app (Instagram app id and secret) and Instagram's endpoints."""

    app_id: str
    app_secret: str
    authorize_url: str
    token_url: str
    graph_host: str  # https://graph.instagram.com, unversioned
    graph_base: str  # the versioned Graph base the adapter uses
    redirect_uri: str
    timeout: float = 10.0

    def authorization_url(self, *, state: str) -> str:
        """The consent URL (Business Login for Instagram) carrying `state`."""
        query = {
            "client_id": self.app_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": ",".join(SCOPES),
            "state": state,
        }
        return f"{self.authorize_url}?{urlencode(query)}"

    def exchange(self, *, code: str) -> str:
        """The short-lived (1 h) token for an authorization code; raises ProviderError."""
        body = self._call(
            "POST",
            self.token_url,
            data={
                "client_id": self.app_id,
                "client_secret": self.app_secret,
                "grant_type": "authorization_code",
                "redirect_uri": self.redirect_uri,
                "code": code,
            },
            what="the authorization code",
        )
        return short_token(body)

    def long_lived(self, short_token: str) -> InstagramToken:
        """Exchange a short-lived token for a 60-day one (ig_exchange_token)."""
        body = self._call(
            "GET",
            f"{self.graph_host}/access_token",
            params={
                "grant_type": "ig_exchange_token",
                "client_secret": self.app_secret,
                "access_token": short_token,
            },
            what="the short-lived token",
        )
        return _token(body)

    def refresh(self, token: str) -> InstagramToken:
        """A long-lived token valid 60 days from now (ig_refresh_token); the token must be at
        least 24 h old and not expired."""
        body = self._call(
            "GET",
            f"{self.graph_host}/refresh_access_token",
            params={"grant_type": "ig_refresh_token", "access_token": token},
            what="the long-lived token",
        )
        return _token(body)

    def account(self, token: str) -> tuple[str, str]:
        """(the professional account's Instagram id, its username) from GET /me."""
        body = self._call(
            "GET",
            f"{self.graph_base}/me",
            params={"fields": "user_id,username"},
            headers={"Authorization": f"Bearer {token}"},
            what="the access token",
        )
        account = body.get("user_id") or body.get("id")
        if account is None or not str(account).isdigit():
            raise _error("Instagram did not say which account was connected", kind="permanent")
        return str(account), str(body.get("username") or "")

    def revoke(self, token: str) -> bool:
        """Remove the app's permissions (DELETE /me/permissions), best effort: True on success."""
        try:
            response = requests.delete(
                f"{self.graph_base}/me/permissions",
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.timeout,
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    def _call(self, method: str, url: str, *, what: str, **kwargs: Any) -> dict[str, Any]:
        failure: ProviderError | None = None
        try:
            response = requests.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            failure = _error(
                f"Instagram did not answer within {self.timeout:g} s", kind="transient"
            )
        except requests.RequestException as exc:
            failure = _error(
                f"Instagram could not be reached ({type(exc).__name__})", kind="transient"
            )
        if failure is not None:  # raised outside the handler: the URL (a token) never rides along
            raise failure
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict):
            return body
        raise _mapped(response.status_code, body if isinstance(body, dict) else {}, what)


def _mapped(status: int, body: dict[str, Any], what: str) -> ProviderError:
    """Graph `{"error": {"code", "error_subcode"}}` or the OAuth endpoint's
    `{"error_type", "code", "error_message"}` as a ProviderError."""
    err = body.get("error") if isinstance(body.get("error"), dict) else body
    try:
        code = int(err.get("code")) if err.get("code") is not None else None
    except (TypeError, ValueError):
        code = None
    kind_name = str(err.get("type") or err.get("error_type") or "")
    if code in _INVALID_TOKEN or (status == 400 and kind_name == "OAuthException"):
        return _error(
            f"Instagram refused {what} (OAuthException {code or status})",
            kind="credentials",
            code=str(code or "OAuthException"),
            status=status,
        )
    if status >= 500 or status == 429 or code in _TRANSIENT:
        return _error(f"Instagram failed ({code or status}); try again", kind="transient",
                      code=str(code or status), status=status)  # fmt: skip
    return _error(f"Instagram refused {what} ({code or status})", kind="permanent",
                  code=str(code or status), status=status)  # fmt: skip


def short_token(body: dict[str, Any]) -> str:
    """The token of a code exchange's answer: Business Login documents `{"data": [{...}]}`,
    the reference page (and public clients) a flat object; both are accepted."""
    item = body["data"][0] if isinstance(body.get("data"), list) and body["data"] else body
    token = item.get("access_token") if isinstance(item, dict) else None
    if not isinstance(token, str) or not token:
        raise _error("Instagram answered the code exchange without a token", kind="permanent")
    return token


def _token(body: dict[str, Any]) -> InstagramToken:
    token = body.get("access_token")
    try:
        seconds = int(body.get("expires_in") or 0)
    except (TypeError, ValueError):
        seconds = 0
    if not isinstance(token, str) or not token or seconds <= 0:
        raise _error("Instagram answered without a token and its lifetime", kind="permanent")
    return InstagramToken(access_token=token, expiry=datetime.now(UTC) + timedelta(seconds=seconds))
