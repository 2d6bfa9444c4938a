"""Google Calendar adapter: idempotent booking events via google-api-python-client."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from . import fields
from .base import OutboundMessage, ProviderAdapter, ProviderError, retry_after_seconds
from .spec import ExtraField, ProviderSpec

T = TypeVar("T")
# (the access token that went stale, or None) -> (a fresh access token, its naive-UTC expiry)
Refresher = Callable[[str | None], tuple[str, datetime]]

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_CREDENTIAL_REASONS = {"authError", "insufficientPermissions"}
_DEFAULT_RETRY_AFTER = 10.0
_QUOTA_RETRY_AFTER = 3600.0


def _authorized_user_problem(token: str) -> str:
    """What is missing from an authorized-user JSON token, "" when it is complete."""
    try:
        data = json.loads(token)
    except ValueError:
        return "Must be an access token or an authorized-user JSON object."
    if not isinstance(data, dict):
        return "Must be an access token or an authorized-user JSON object."
    missing = [k for k in ("refresh_token", "client_id", "client_secret") if not data.get(k)]
    if missing:
        return "The authorized-user JSON needs " + ", ".join(missing) + "."
    return ""


class GoogleCalendar(ProviderAdapter):
    """Writes booking events into one calendar; event ids are derived from booking ids."""

    spec = ProviderSpec(
        slug="google_calendar",
        label="Google Calendar",
        vendor="Google Calendar",
        token_help=(
            'access token (`ya29.…`) or authorized-user JSON `{"refresh_token", "client_id",'
            ' "client_secret"}`; or none: "Connect with Google" (OAuth, docs/oauth.md)'
        ),
        token_problem=lambda token: (
            _authorized_user_problem(token) if token.startswith("{") else ""
        ),
        extra=(
            ExtraField(
                "calendar_id", fields.calendar_id, "defaults to `primary`", default="primary"
            ),
        ),
        base_url_setting="GOOGLE_CALENDAR_API_BASE",
        default_rate_per_second=10.0,
        adapter_settings={"token_uri": "GOOGLE_TOKEN_URI"},
    )

    def __init__(
        self,
        *,
        token: str,
        extra: Mapping[str, Any],
        base_url: str,
        timeout: float = 10.0,
        token_uri: str = GOOGLE_TOKEN_URI,
        refresher: Refresher | None = None,
        access_token: str | None = None,
        access_token_expiry: datetime | None = None,
        **options: Any,
    ) -> None:
        """`refresher`, when given, renews the access token (the caller's shared, locked
        refresh: called with the token that went stale, it returns a fresh token and its
        naive-UTC expiry, or raises RefreshError); `access_token`/`access_token_expiry` are the
        last token it gave. The adapter then never holds a refresh token or client secret."""
        super().__init__(token=token, extra=extra, base_url=base_url, timeout=timeout, **options)
        self.calendar_id = str(self.extra.get("calendar_id") or "primary")
        if refresher is not None:
            self._credentials = self._managed_credentials(
                refresher, access_token, access_token_expiry
            )
        else:
            self._credentials = self._build_credentials(token, token_uri)
        authorized = google_auth_httplib2.AuthorizedHttp(
            self._credentials, http=httplib2.Http(timeout=self.timeout)
        )
        self._service = build(
            "calendar",
            "v3",
            http=authorized,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": f"{self.base_url}/"},
        )

    def check(self) -> str:
        """Fetch the calendar list entry; return its name and role, or raise ProviderError."""
        entry = self._call(
            lambda: self._service.calendarList().get(calendarId=self.calendar_id).execute()
        )
        name = entry.get("summary") or entry.get("id") or self.calendar_id
        return f"Google Calendar '{name}' ({entry.get('accessRole', 'unknown access')})"

    def send(self, message: OutboundMessage) -> str:
        """Always raise ProviderError (permanent): a calendar does not deliver messages."""
        raise self._error("Google Calendar does not send messages", kind="permanent")

    @staticmethod
    def event_id_for(booking_id: str) -> str:
        """Return the calendar event id for a booking: base32hex (a-v, 0-9) of its SHA-256."""
        # Never change this derivation: existing events in customers' calendars carry these ids.
        digest = hashlib.sha256(booking_id.encode("utf-8")).digest()
        return base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()

    def upsert_event(self, booking_id: str, event: Mapping[str, Any]) -> str:
        """Insert or replace the booking's event; return its id, or raise ProviderError."""
        event_id = self.event_id_for(booking_id)
        body = {"status": "confirmed", **event, "id": event_id}
        body.pop("iCalUID", None)
        events = self._service.events()
        try:
            self._call(
                lambda: events.insert(
                    calendarId=self.calendar_id, body=body, sendUpdates="none"
                ).execute()
            )
            return event_id
        except ProviderError as error:
            if error.status != 409:
                raise
        # Google 409 duplicate: the id exists (possibly as a cancelled event); replace it.
        self._call(
            lambda: events.update(
                calendarId=self.calendar_id, eventId=event_id, body=body, sendUpdates="none"
            ).execute()
        )
        return event_id

    def delete_event(self, booking_id: str) -> None:
        """Delete the booking's event; an event already gone is fine; else raise ProviderError."""
        event_id = self.event_id_for(booking_id)
        try:
            self._call(
                lambda: (
                    self._service.events()
                    .delete(calendarId=self.calendar_id, eventId=event_id, sendUpdates="none")
                    .execute()
                )
            )
        except ProviderError as error:
            if error.status not in {404, 410}:
                raise

    def _secrets(self) -> list[str]:
        creds = getattr(self, "_credentials", None)
        extra = [creds.token, creds.refresh_token, creds.client_secret] if creds else []
        return [self._token, *(secret for secret in extra if secret)]

    def _managed_credentials(
        self, refresher: Refresher, token: str | None, expiry: datetime | None
    ) -> Credentials:
        credentials = Credentials(token=token or None, expiry=expiry)

        def handler(request: Any, scopes: Any = None) -> tuple[str, datetime]:
            # google-auth calls this before a request when the token is missing or near its
            # expiry, and after a 401 (AuthorizedHttp): hand over the token that went stale.
            return refresher(credentials.token)

        credentials.refresh_handler = handler
        return credentials

    def _build_credentials(self, token: str, token_uri: str) -> Credentials:
        if not token.lstrip().startswith("{"):
            return Credentials(token=token)
        try:
            info = json.loads(token)
        except ValueError:
            info = None
        fields = ("refresh_token", "client_id", "client_secret")
        if not isinstance(info, dict) or not all(info.get(field) for field in fields):
            raise self._error(
                "Google credentials must hold refresh_token, client_id and client_secret",
                kind="credentials",
            )
        return Credentials(
            token=info.get("access_token") or None,
            refresh_token=info["refresh_token"],
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            token_uri=token_uri,
        )

    def _call(self, request: Callable[[], T]) -> T:
        try:
            return request()
        except HttpError as exc:
            error = self._map_http_error(exc)
        except RefreshError as exc:
            error = self._map_refresh_error(exc)
        except TimeoutError:
            error = self._timeout_error()
        except (TransportError, httplib2.HttpLib2Error, http.client.HTTPException, OSError) as exc:
            error = self._unreachable_error(exc)
        raise error

    def _map_http_error(self, exc: HttpError) -> ProviderError:
        status = int(exc.resp.status)
        try:
            err = json.loads(exc.content)["error"]
            first = (err.get("errors") or [{}])[0]
            reason, text = str(first.get("reason") or ""), str(err.get("message") or "")
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            reason, text = "", ""
        text = text or f"HTTP {status}"
        code = reason or status
        retry_after_header = exc.resp.get("retry-after")

        if status == 401 or reason in _CREDENTIAL_REASONS:
            return self._error(
                f"Google rejected the calendar credentials ({status} {reason or text})",
                kind="credentials",
                code=code,
                status=status,
            )
        if status == 429 or reason in _RATE_LIMIT_REASONS:
            retry_after = retry_after_seconds(retry_after_header, _DEFAULT_RETRY_AFTER)
            return self._error(
                f"Google Calendar rate limit reached ({code}); retry after {retry_after:g} s",
                kind="rate_limited",
                code=code,
                retry_after=retry_after,
                status=status,
            )
        if reason == "quotaExceeded":
            retry_after = retry_after_seconds(retry_after_header, _QUOTA_RETRY_AFTER)
            return self._error(
                f"Google Calendar usage limits exceeded; retry after {retry_after:g} s",
                kind="rate_limited",
                code=code,
                retry_after=retry_after,
                status=status,
            )
        if status >= 500 or reason == "backendError":
            return self._error(
                f"Google Calendar: {text} ({status})", kind="transient", code=code, status=status
            )
        ref = f"{status} {reason}".strip()
        return self._error(
            f"Google Calendar: {text} ({ref})", kind="permanent", code=code, status=status
        )

    def _map_refresh_error(self, exc: RefreshError) -> ProviderError:
        response = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], Mapping) else {}
        code = str(response.get("error") or "")
        if code == "needs_reauth":  # our own refusal: the integration must be connected again
            return self._error(str(exc.args[0])[:300], kind="credentials", code=code)
        if exc.retryable:
            return self._error(
                f"Google's token endpoint failed ({code or 'temporary error'})",
                kind="transient",
                code=code or None,
            )
        if code:
            return self._error(
                f"Google refused to refresh the access token ({code})",
                kind="credentials",
                code=code,
            )
        # google-auth: a bare access token that Google rejected cannot be refreshed.
        return self._error(
            "Google rejected the access token and there is no refresh token to renew it",
            kind="credentials",
            status=401,
        )
