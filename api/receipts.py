"""Provider receipt receivers under /webhooks/: verify, record, answer fast (no provider call).

Every receiver checks its provider's own signature before reading anything else; a request that
fails it gets 403 and changes nothing. Unsigned receivers do not exist, not even in DEBUG.
A receipt for a message we do not know is answered 200 (counted, dropped) so the provider does
not retry it forever. See docs/receipts.md.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections import Counter
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from api.errors import envelope
from api.exceptions import ErrorCode
from api.metrics import store
from shared.crypto import TokenDecryptionError
from shared.models import Integration
from shared.receipts import meta, sendgrid, twilio
from shared.receipts.apply import record_receipts
from shared.receipts.types import MalformedReceipt, Outcome
from shared.redaction import remember_secret
from shared.services.keys import integration_token

logger = logging.getLogger(__name__)

_CHALLENGE = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_KEY = re.compile(r"[A-Za-z0-9_-]{20,64}")  # what new_webhook_key makes


class _Refused(Exception):
    def __init__(self, status: int, code: ErrorCode, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.outcome = status, code, message, outcome


def _forbidden() -> _Refused:
    return _Refused(
        403,
        ErrorCode.WEBHOOK_SIGNATURE_INVALID,
        "The signature does not verify.",
        Outcome.BAD_SIGNATURE,
    )


def _body(request: HttpRequest) -> bytes:
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    try:
        too_big = int(request.META.get("CONTENT_LENGTH") or 0) > limit
        raw = b"" if too_big else request.body
    except (RequestDataTooBig, ValueError):
        too_big = True
    if too_big or len(raw) > limit:
        raise _Refused(413, ErrorCode.BODY_TOO_LARGE, f"At most {limit} bytes.", Outcome.MALFORMED)
    return raw


def _integration(key: str, provider: str) -> Integration:
    if not _KEY.fullmatch(key):
        raise _forbidden()
    integration = Integration.objects.filter(webhook_key=key, provider=provider).first()
    if integration is None or not integration.is_active:
        raise _forbidden()  # an unknown key looks exactly like a bad signature
    return integration


def _answer(provider: str, handle: Callable[[], Counter[Outcome]]) -> HttpResponse:
    try:
        outcomes: Counter[Outcome] = handle()
    except _Refused as refusal:
        store().receipts_received(provider, {refusal.outcome: 1})
        body = envelope(refusal.message, code=refusal.code)
        return JsonResponse(body, status=refusal.status)
    except MalformedReceipt as exc:
        store().receipts_received(provider, {Outcome.MALFORMED: 1})
        return JsonResponse(envelope(str(exc), code=ErrorCode.WEBHOOK_MALFORMED), status=400)
    store().receipts_received(provider, outcomes)
    return JsonResponse({"status": "ok", "ok": True, "outcomes": dict(outcomes)})


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest, key: str) -> HttpResponse:
    """Twilio WhatsApp status callback for the integration with webhook key `key`."""

    def handle() -> Counter[Outcome]:
        _body(request)
        integration = _integration(key, "whatsapp")
        try:
            token = integration_token(integration)
        except TokenDecryptionError:
            raise _forbidden() from None
        url = settings.PUBLIC_BASE_URL + request.get_full_path()
        signature = request.headers.get("X-Twilio-Signature", "")
        if not twilio.signature_valid(url, request.POST, signature, token):
            raise _forbidden()
        receipts = twilio.parse(request.POST, request.GET.get("m"))
        return record_receipts([integration], receipts)

    return _answer("whatsapp", handle)


@csrf_exempt
@require_POST
def sendgrid_events(request: HttpRequest, key: str) -> HttpResponse:
    """SendGrid Event Webhook batch for the integration with webhook key `key`."""

    def handle() -> Counter[Outcome]:
        raw = _body(request)
        integration = _integration(key, "sendgrid")
        public_key = str(integration.extra.get("event_webhook_public_key") or "")
        signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
        timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
        if not sendgrid.signature_valid(raw, signature, timestamp, public_key):
            raise _forbidden()
        return record_receipts([integration], sendgrid.parse(raw))

    return _answer("sendgrid", handle)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def instagram(request: HttpRequest) -> HttpResponse:
    """Meta webhooks for Instagram: GET is the subscription handshake, POST carries receipts."""
    if request.method == "GET":
        return _handshake(request)

    def handle() -> Counter[Outcome]:
        raw = _body(request)
        remember_secret(settings.META_APP_SECRET)
        header = request.headers.get("X-Hub-Signature-256", "")
        if not meta.signature_valid(raw, header, settings.META_APP_SECRET):
            raise _forbidden()
        outcomes: Counter[Outcome] = Counter()
        for account, receipts in meta.parse(raw).items():
            integrations = list(
                Integration.objects.filter(
                    provider="instagram", is_active=True, extra__instagram_scoped_id=account
                )
            )
            if integrations:
                outcomes += record_receipts(integrations, receipts)
            else:
                outcomes[Outcome.UNKNOWN_MESSAGE] += len(receipts)
        return outcomes

    return _answer("instagram", handle)


def _handshake(request: HttpRequest) -> HttpResponse:
    expected = settings.META_WEBHOOK_VERIFY_TOKEN
    remember_secret(expected)
    token = request.GET.get("hub.verify_token", "")
    challenge = request.GET.get("hub.challenge", "")
    if (
        request.GET.get("hub.mode") != "subscribe"
        or not expected
        or not hmac.compare_digest(token.encode(), expected.encode())
    ):
        body = envelope(
            "The verify token does not match.", code=ErrorCode.WEBHOOK_SIGNATURE_INVALID
        )
        return JsonResponse(body, status=403)
    if not _CHALLENGE.fullmatch(challenge):
        body = envelope("hub.challenge is missing or malformed.", code=ErrorCode.WEBHOOK_MALFORMED)
        return JsonResponse(body, status=400)
    return HttpResponse(challenge, content_type="text/plain")
