"""Google OAuth 2.0 for web-server apps: the authorization URL (PKCE, offline access), the code
exchange (google-auth-oauthlib), the access-token refresh (google-auth) and revocation.

Like an adapter, it takes its endpoints and client credentials as arguments and never reads
settings, the database or Celery. Errors are ProviderError; their messages never carry a
code, a verifier or a token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from google.auth.exceptions import RefreshError, TransportError
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from .base import ProviderError

SLUG = "google_calendar"
SCOPES = ("https://www.googleapis.com/auth/calendar",)
# google-auth refreshes a token this long before its expiry (_helpers.REFRESH_THRESHOLD is
# 3 min 45 s); a stored token with less left than this is not handed out again.
REFRESH_MARGIN = timedelta(minutes=5)
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class GoogleTokens:
    """What a code exchange or a refresh gave; `expiry` is aware UTC."""

    access_token: str
    expiry: datetime
    refresh_token: str | None = None
    scopes: tuple[str, ...] = ()


class _TimedRequest(GoogleRequest):
    """google-auth's transport with our timeout (its own default is 120 s)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(session=requests.Session())
        self._timeout = timeout

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        return super().__call__(
            url, method=method, body=body, headers=headers, timeout=self._timeout, **kwargs
        )


def _error(message: str, *, kind: str, code: str | None = None) -> ProviderError:
    return ProviderError(message, kind=kind, provider=SLUG, code=code)


@dataclass(frozen=True)
class GoogleOAuthClient:
    """The deployment's OAuth client (from settings) and Google's endpoints (or the sandbox's)."""

    client_id: str
    client_secret: str
    auth_uri: str
    token_uri: str
    revoke_uri: str
    redirect_uri: str
    timeout: float = 10.0

    def _flow(self, **kwargs: Any) -> Flow:
        if any(_is_loopback_http(uri) for uri in (self.auth_uri, self.token_uri)):
            # oauthlib refuses http:// endpoints; the local sandbox is the only one there is.
            os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
        # Granular consent may grant less than asked: checked by the caller, not raised here.
        os.environ.setdefault("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
        config = {
            "web": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "auth_uri": self.auth_uri,
                "token_uri": self.token_uri,
            }
        }
        return Flow.from_client_config(
            config, scopes=list(SCOPES), redirect_uri=self.redirect_uri, **kwargs
        )

    def authorization_url(self, *, state: str) -> tuple[str, str]:
        """(the consent URL, the PKCE code verifier to keep until the callback)."""
        flow = self._flow(state=state)
        url, _ = flow.authorization_url(
            access_type="offline", prompt="consent", include_granted_scopes="true"
        )
        return url, str(flow.code_verifier)

    def exchange(self, *, code: str, code_verifier: str) -> GoogleTokens:
        """Trade the authorization code for tokens; raises ProviderError (`code` is the OAuth
        error: invalid_grant for a reused or expired code or a PKCE mismatch)."""
        flow = self._flow(code_verifier=code_verifier, autogenerate_code_verifier=False)
        error: ProviderError | None = None
        try:
            flow.fetch_token(code=code, timeout=self.timeout)
        except OAuth2Error as exc:
            error = _error(
                f"Google refused the authorization code ({exc.error})",
                kind="credentials",
                code=str(exc.error or "oauth_error"),
            )
        except requests.Timeout:
            error = _error(f"Google did not answer within {self.timeout:g} s", kind="transient")
        except requests.RequestException as exc:
            error = _error(f"Google could not be reached ({type(exc).__name__})", kind="transient")
        if error is not None:  # raised outside the handler: no exception text rides along
            raise error
        creds = flow.credentials
        granted = tuple(creds.granted_scopes or creds.scopes or ())
        return GoogleTokens(
            access_token=str(creds.token),
            expiry=_aware(creds.expiry),
            refresh_token=creds.refresh_token or None,
            scopes=granted,
        )

    def refresh(self, *, refresh_token: str, client_id: str = "", client_secret: str = "") -> GoogleTokens:  # fmt: skip
        """A new access token for `refresh_token` (the client is the deployment's unless given:
        a pasted authorized-user JSON names its own). Raises google-auth's RefreshError
        (`retryable`, and `args[1]["error"]` e.g. invalid_grant) as the adapter maps it."""
        creds = Credentials(
            token=None,
            refresh_token=refresh_token,
            client_id=client_id or self.client_id,
            client_secret=client_secret or self.client_secret,
            token_uri=self.token_uri,
        )
        try:
            creds.refresh(_TimedRequest(self.timeout))
        except TransportError as exc:
            raise RefreshError(
                f"Google's token endpoint could not be reached ({type(exc).__name__})",
                retryable=True,
            ) from None
        return GoogleTokens(
            access_token=str(creds.token),
            expiry=_aware(creds.expiry),
            refresh_token=creds.refresh_token if creds.refresh_token != refresh_token else None,
        )

    def revoke(self, token: str) -> bool:
        """Revoke a refresh or access token at Google (best effort): True when Google said so."""
        try:
            response = requests.post(
                self.revoke_uri,
                data={"token": token},
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=self.timeout,
            )
        except requests.RequestException:
            return False
        return response.status_code == 200


def refresh_error_code(exc: RefreshError) -> str:
    """The OAuth error of a refused refresh ("invalid_grant", …), "" when there is none."""
    response = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    return str(response.get("error") or "")


def _aware(expiry: datetime | None) -> datetime:
    if expiry is None:  # Google always says expires_in; be safe with a server that does not
        return datetime.now(UTC) + timedelta(seconds=3600)
    return expiry.replace(tzinfo=UTC) if expiry.tzinfo is None else expiry


def _is_loopback_http(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK
