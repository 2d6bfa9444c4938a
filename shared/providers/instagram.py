"""Instagram messaging adapter over the Meta Graph API (plain requests, bearer token)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import requests
from urllib3.exceptions import ReadTimeoutError

from . import fields
from .base import (
    OutboundMessage,
    ProviderAdapter,
    ProviderError,
    retry_after_seconds,
    shared_session,
)
from .spec import ExtraField, MessageRules, ProviderSpec

_CREDENTIALS = {190}
_RATE_LIMITS = {4, 17, 32, 613, 80002}
_TRANSIENT = {1, 2}
_DEFAULT_RETRY_AFTER = 60.0
# media_kind -> the Graph attachment type (a document goes as `file`).
_ATTACHMENT_TYPES = {"image": "image", "video": "video", "audio": "audio"}


class InstagramGraph(ProviderAdapter):
    """Sends text DMs from our Instagram professional account to an Instagram-scoped user id."""

    spec = ProviderSpec(
        slug="instagram",
        label="Instagram messaging",
        vendor="Instagram",
        token_help=(
            'access token (`IGAA…`/`EAA…`); or none: "Connect with Instagram" (OAuth, '
            "docs/oauth.md)"
        ),
        extra=(
            ExtraField(
                "instagram_scoped_id", fields.numeric_id, "numeric IG account id", required=True
            ),
        ),
        base_url_setting="GRAPH_API_BASE",
        default_rate_per_second=300.0,
        messages=MessageRules(
            destination=fields.numeric_id,
            destination_help="Instagram-scoped user id (digits)",
            body_limit=999,
            media_limit=1,
            media_text_limit=0,
            tags=("HUMAN_AGENT",),
        ),
    )

    def _configure(self) -> None:
        self.account_id = str(self.extra.get("instagram_scoped_id") or "")
        if not self.account_id:
            raise self._error(
                "Instagram integration has no instagram_scoped_id", kind="credentials"
            )
        self._session = shared_session()
        self._headers = {"Authorization": f"Bearer {self._token}"}

    def check(self) -> str:
        """GET /me; return "Instagram account @name (id …)", or raise ProviderError."""
        me = self._call("GET", "me", params={"fields": "user_id,username"})
        account = me.get("user_id") or me.get("id")
        return f"Instagram account @{me.get('username', '?')} (id {account})"

    def send(self, message: OutboundMessage) -> str:
        """POST /{id}/messages (text, or one attachment by URL; HUMAN_AGENT tag when set);
        return the Graph message_id, or raise ProviderError."""
        body: dict[str, Any] = {"text": message.body}
        if message.media_urls:
            url = message.media_urls[0]
            kind = fields.media_kind(url)
            body = {
                "attachment": {"type": _ATTACHMENT_TYPES.get(kind, "file"), "payload": {"url": url}}
            }
        payload: dict[str, Any] = {"recipient": {"id": message.to}, "message": body}
        if message.tag:
            payload |= {"messaging_type": "MESSAGE_TAG", "tag": message.tag}
        sent = self._call("POST", f"{self.account_id}/messages", json=payload)
        return str(sent["message_id"])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._session.request(
                method,
                f"{self.base_url}/{path}",
                headers=self._headers,
                timeout=self.timeout,
                **kwargs,
            )
        except requests.Timeout:
            error = self._timeout_error()
        except requests.ConnectionError as exc:
            timed_out = bool(exc.args) and isinstance(exc.args[0], ReadTimeoutError)
            error = self._timeout_error() if timed_out else self._unreachable_error(exc)
        except requests.RequestException as exc:
            error = self._unreachable_error(exc)
        else:
            try:
                data = response.json()
            except ValueError:
                data = None
            if response.ok and isinstance(data, dict) and "error" not in data:
                return data
            error = self._map_error(response.status_code, response.headers, data)
        raise error

    def _map_error(self, status: int, headers: Mapping[str, str], data: Any) -> ProviderError:
        err = data.get("error") if isinstance(data, dict) else None
        if not isinstance(err, dict):
            if status == 429:
                retry_after = retry_after_seconds(headers.get("Retry-After"), _DEFAULT_RETRY_AFTER)
                return self._error(
                    f"Instagram is throttling this account; retry after {retry_after:g} s",
                    kind="rate_limited",
                    retry_after=retry_after,
                    status=status,
                )
            kind = "transient" if status >= 500 else "permanent"
            return self._error(f"Instagram answered HTTP {status}", kind=kind, status=status)

        code = err.get("code")
        subcode = err.get("error_subcode")
        text = str(err.get("message") or "unknown error")
        ref = f"{code}/{subcode}" if subcode else f"{code}"

        if code in _CREDENTIALS:
            return self._error(
                f"Instagram rejected the access token ({ref}): {text}",
                kind="credentials",
                code=code,
                status=status,
            )
        if code in _RATE_LIMITS:
            retry_after = _buc_wait(headers)
            if retry_after is None:
                retry_after = retry_after_seconds(headers.get("Retry-After"), _DEFAULT_RETRY_AFTER)
            return self._error(
                f"Instagram rate limit reached ({ref}); retry after {retry_after:g} s",
                kind="rate_limited",
                code=code,
                retry_after=retry_after,
                status=status,
            )
        if code in _TRANSIENT or err.get("is_transient") or status >= 500:
            return self._error(
                f"Instagram: {text} ({ref})", kind="transient", code=code, status=status
            )
        # Everything else (100/2018001, 551, 10/2018278, 10/2018108, 200, 3, 9009, 230, 110 …)
        # is about the recipient, the 24-hour window or the app's permissions: retrying won't help.
        return self._error(f"Instagram: {text} ({ref})", kind="permanent", code=code, status=status)


def _buc_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds until the Business-Use-Case limit lifts, from X-Business-Use-Case-Usage."""
    try:
        usage = json.loads(headers.get("X-Business-Use-Case-Usage") or "{}")
        minutes = max(
            float(entry.get("estimated_time_to_regain_access") or 0)
            for entries in usage.values()
            for entry in entries
        )
    except (ValueError, TypeError, AttributeError):
        return None
    return minutes * 60 if minutes > 0 else None
