"""SendGrid v3 Mail Send adapter (official sendgrid SDK over python-http-client)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.error import URLError

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from . import fields
from .base import (
    Attachment,
    OutboundMessage,
    ProviderAdapter,
    ProviderError,
    retry_after_seconds,
)
from .spec import ExtraField, MessageRules, ProviderSpec

T = TypeVar("T")

_DEFAULT_RETRY_AFTER = 1.0
_TEMPORARY_BLOCK_RETRY_AFTER = 60.0


class SendGridEmail(ProviderAdapter):
    """Sends one email per message from the integration's verified sender."""

    spec = ProviderSpec(
        slug="sendgrid",
        label="SendGrid email",
        vendor="SendGrid",
        token_help="API key (`SG.…`)",
        token_problem=lambda token: (
            "" if token.startswith("SG.") else "Must be a SendGrid API key (it starts with 'SG.')."
        ),
        extra=(
            ExtraField("from_email", fields.email, "a verified sender", required=True),
            ExtraField("from_name", fields.short_text, "the sender's display name"),
            ExtraField(
                "to_email", fields.email, "Settings test destination", test_destination=True
            ),
            ExtraField(
                "event_webhook_public_key",
                fields.ec_public_key,
                "the Event Webhook's verification key (public), to accept its receipts",
            ),
        ),
        base_url_setting="SENDGRID_API_BASE",
        default_rate_per_second=100.0,
        messages=MessageRules(
            destination=fields.email,
            destination_help="email address",
            body_limit=100_000,
            email=True,
            template=fields.sendgrid_template,
            template_help='`{"id": "d-…", "data": {…}}` (dynamic template)',
            template_allows=("subject",),
            attachments=True,
        ),
    )

    def _configure(self) -> None:
        self.from_email = str(self.extra.get("from_email") or "")
        self.from_name = str(self.extra.get("from_name") or "")
        if not self.from_email:
            raise self._error("SendGrid integration has no from_email", kind="permanent")
        self._sg = SendGridAPIClient(api_key=self._token, host=self.base_url)
        # The SDK builds its python-http-client once; child clients inherit this timeout.
        self._sg.client.timeout = self.timeout

    def check(self) -> str:
        """GET /v3/scopes; return a description, or raise ProviderError (no mail.send too)."""
        response = self._call(lambda: self._sg.client.scopes.get())
        scopes = _json(response.body).get("scopes") or []
        if "mail.send" not in scopes:
            raise self._error(
                "SendGrid API key lacks the mail.send scope", kind="credentials", code="scope"
            )
        return f"SendGrid API key with mail.send ({len(scopes)} scopes)"

    def send(self, message: OutboundMessage) -> str:
        """POST /v3/mail/send; return the X-Message-Id, or raise ProviderError."""
        content = []
        if message.body:
            content.append({"type": "text/plain", "value": message.body})
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        if not content and not message.template:
            raise self._error("SendGrid: the email has neither text nor HTML", kind="permanent")
        sender = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        personalization: dict[str, Any] = {"to": [{"email": message.to}]}
        mail: dict[str, Any] = {"personalizations": [personalization], "from": sender}
        if message.subject:
            mail["subject"] = message.subject
        if content:
            mail["content"] = content
        if message.template:
            # A dynamic template holds subject and content; `data` fills its placeholders, and
            # a subject sent beside it is offered to the template as {{subject}}.
            mail["template_id"] = message.template["id"]
            data = dict(message.template.get("data") or {})
            if message.subject:
                data.setdefault("subject", message.subject)
            if data:
                personalization["dynamic_template_data"] = data
        if message.attachments:
            mail["attachments"] = [_attachment(item) for item in message.attachments]
        if message.reference:
            mail["custom_args"] = {"corbi_reference": message.reference}
        response = self._call(lambda: self._sg.send(mail))
        return str(response.headers.get("X-Message-Id") or "")

    def _call(self, request: Callable[[], T]) -> T:
        try:
            return request()
        except HTTPError as exc:
            error = self._map_error(exc.status_code, exc.headers or {}, exc.body)
        except TimeoutError:
            error = self._timeout_error()
        except URLError as exc:
            timed_out = isinstance(exc.reason, TimeoutError)
            error = self._timeout_error() if timed_out else self._unreachable_error(exc)
        except (OSError, http.client.HTTPException) as exc:
            error = self._unreachable_error(exc)
        raise error

    def _map_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        errors = _json(body).get("errors") or [{}]
        first = errors[0] if isinstance(errors[0], dict) else {}
        text = str(first.get("message") or f"HTTP {status}")
        field = first.get("field")

        if status == 429:
            return self._error(
                "SendGrid rate limit reached",
                kind="rate_limited",
                code=status,
                retry_after=_rate_limit_wait(headers),
                status=status,
            )
        if status == 401:
            return self._error(
                "SendGrid rejected the API key (401)",
                kind="credentials",
                code=status,
                status=status,
            )
        if status == 403:
            if field == "from" or "verified Sender Identity" in text:
                # SendGrid 403 on from: a sender-configuration problem, not a bad key.
                return self._error(
                    "SendGrid: the from address is not a verified sender",
                    kind="permanent",
                    code=status,
                    status=status,
                )
            if "temporary block" in text:
                return self._error(
                    f"SendGrid: {text}",
                    kind="rate_limited",
                    code=status,
                    retry_after=_TEMPORARY_BLOCK_RETRY_AFTER,
                    status=status,
                )
            return self._error(
                f"SendGrid API key is not allowed to do this (403 {text})",
                kind="credentials",
                code=status,
                status=status,
            )
        if status == 413:
            return self._error(
                "SendGrid: the email is too large (413)",
                kind="permanent",
                code=status,
                status=status,
            )
        kind = "transient" if status >= 500 else "permanent"
        where = f" ({field})" if field else ""
        return self._error(f"SendGrid: {text}{where}", kind=kind, code=status, status=status)


def _attachment(item: Attachment) -> dict[str, str]:
    out = {
        "content": item.content,
        "filename": item.filename,
        "type": item.type,
        "disposition": item.disposition,
    }
    if item.content_id:
        out["content_id"] = item.content_id
    return out


def _json(body: bytes | str | None) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _rate_limit_wait(headers: Mapping[str, str]) -> float:
    """Seconds until X-RateLimit-Reset (epoch seconds), at least 1; else Retry-After."""
    reset = headers.get("X-RateLimit-Reset")
    try:
        return max(1.0, float(reset) - time.time())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return max(1.0, retry_after_seconds(headers.get("Retry-After"), _DEFAULT_RETRY_AFTER))
