"""WhatsApp adapter over Twilio Programmable Messaging (official twilio SDK)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
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

T = TypeVar("T")

_CREDENTIALS = {20003}
_RATE_LIMITS = {20429, 63017, 63018}
_TRANSIENT = {20500, 20503}
_DEFAULT_RETRY_AFTER = 1.0
_MESSAGING_LIMIT_RETRY_AFTER = 60.0
# Twilio's Client falls back to TWILIO_* env vars (including TWILIO_EDGE/TWILIO_REGION, which
# rewrite the host) whenever `environment` is falsy; a non-empty mapping without them stops that.
_NO_ENVIRONMENT = {"CORBI_TWILIO_ENV": "ignored"}


class _HttpClient(TwilioHttpClient):
    """TwilioHttpClient that keeps the last response, so a 429's Retry-After can be read."""

    last_response: Response | None = None

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self.last_response = None
        self.last_response = super().request(*args, **kwargs)
        return self.last_response


class TwilioWhatsApp(ProviderAdapter):
    """Sends WhatsApp messages from the integration's approved sender."""

    spec = ProviderSpec(
        slug="whatsapp",
        label="WhatsApp (Twilio)",
        vendor="Twilio",
        token_help="Twilio Auth Token",
        extra=(
            ExtraField("account_sid", fields.account_sid, "`AC` + 32 hex", required=True),
            ExtraField(
                "from_whatsapp", fields.phone, "E.164, `whatsapp:` prefix allowed", required=True
            ),
            ExtraField(
                "to_whatsapp", fields.phone, "Settings test destination", test_destination=True
            ),
        ),
        base_url_setting="TWILIO_API_BASE",
        default_rate_per_second=80.0,
        messages=MessageRules(
            destination=fields.phone,
            destination_help="E.164 number valid for its country (`whatsapp:` prefix allowed)",
            body_limit=1600,
            template=fields.whatsapp_template,
            template_help='`{"content_sid": "HX…", "variables": {"1": "Ana"}}`',
            media_limit=1,
            media_text_limit=1600,
        ),
    )

    def _configure(self) -> None:
        self.account_sid = str(self.extra.get("account_sid") or "")
        if not fields.ACCOUNT_SID.fullmatch(self.account_sid):
            raise self._error(
                "Twilio account SID is malformed (expected AC + 32 hex digits)", kind="credentials"
            )
        sender = str(self.extra.get("from_whatsapp") or "")
        if not sender:
            raise self._error("WhatsApp integration has no from_whatsapp sender", kind="permanent")
        self.sender = whatsapp_address(sender)
        self._http = _HttpClient(pool_connections=False, timeout=self.timeout)
        self._http.session = shared_session()
        self._client = Client(
            self.account_sid,
            self._token,
            account_sid=self.account_sid,
            http_client=self._http,
            environment=_NO_ENVIRONMENT,
            edge=None,
            region=None,
        )
        self._client.api.base_url = self.base_url

    def check(self) -> str:
        """Fetch the account; return its name and status, or raise ProviderError."""
        account = self._call(lambda: self._client.api.v2010.accounts(self.account_sid).fetch())
        if account.status != "active":
            raise self._error(f"Twilio account is {account.status}", kind="credentials")
        return f"Twilio account {account.friendly_name} ({account.status}, {account.type})"

    def send(self, message: OutboundMessage) -> str:
        """Create a message; return its SID (SM…), or raise ProviderError."""
        params: dict[str, Any] = {"to": whatsapp_address(message.to), "from_": self.sender}
        if message.template:
            # A Content template replaces Body and MediaUrl. ContentVariables must be a JSON
            # string: the SDK form-encodes a dict as its keys ("1"), which Twilio refuses.
            params["content_sid"] = message.template["content_sid"]
            variables = message.template.get("variables") or {}
            if variables:
                params["content_variables"] = json.dumps(variables, ensure_ascii=False)
        else:
            if message.body:
                params["body"] = message.body
            if message.media_urls:
                params["media_url"] = list(message.media_urls)
        if message.status_callback:
            params["status_callback"] = message.status_callback
        created = self._call(lambda: self._client.messages.create(**params))
        return str(created.sid)

    def _call(self, request: Callable[[], T]) -> T:
        try:
            return request()
        except (TwilioRestException, TwilioServiceException) as exc:
            error = self._map_error(exc.status, exc.code, exc)
        except requests.Timeout:
            error = self._timeout_error()
        except requests.ConnectionError as exc:
            timed_out = bool(exc.args) and isinstance(exc.args[0], ReadTimeoutError)
            error = self._timeout_error() if timed_out else self._unreachable_error(exc)
        except requests.RequestException as exc:
            error = self._unreachable_error(exc)
        raise error

    def _map_error(
        self, status: int, code: int | None, exc: TwilioRestException | TwilioServiceException
    ) -> ProviderError:
        code = code or status
        if isinstance(exc, TwilioRestException):
            text = str(exc.msg).split(": ", 1)[-1]
        else:
            text = str(exc.detail or exc.title)

        if code in _CREDENTIALS or status == 401:
            return self._error(
                f"Twilio rejected the credentials ({code})",
                kind="credentials",
                code=code,
                status=status,
            )
        if code in _RATE_LIMITS or status == 429:
            headers = self._http.last_response.headers if self._http.last_response else None
            default = _DEFAULT_RETRY_AFTER if status == 429 else _MESSAGING_LIMIT_RETRY_AFTER
            retry_after = retry_after_seconds((headers or {}).get("Retry-After"), default)
            return self._error(
                f"Twilio rate limit reached ({code}); retry after {retry_after:g} s",
                kind="rate_limited",
                code=code,
                retry_after=retry_after,
                status=status,
            )
        if code in _TRANSIENT or status >= 500:
            return self._error(
                f"Twilio: {text} ({code})", kind="transient", code=code, status=status
            )
        # 21655 bad or unknown ContentSid, 21656 bad ContentVariables, 21620 bad MediaUrl,
        # 21211 invalid To, 21408 region not enabled, 21602/21603/21604 missing Body/From/To,
        # 21617 body too long, 63007 sender not a WhatsApp channel, 63016 outside the 24 h window,
        # 20404 not found, and every other 4xx: the same request will fail again.
        return self._error(f"Twilio: {text} ({code})", kind="permanent", code=code, status=status)


def whatsapp_address(number: str) -> str:
    """Return `number` as "whatsapp:+E164", whether or not it already had the prefix."""
    bare = number.strip().removeprefix("whatsapp:").strip()
    if not bare.startswith("+"):
        bare = f"+{bare}"
    return f"whatsapp:{bare}"
