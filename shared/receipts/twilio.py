"""Twilio WhatsApp status callbacks, verified with the twilio SDK's RequestValidator.

Each send names its callback URL (urls.status_callback_url). Twilio signs that exact URL plus the posted fields with
the account's auth token; behind a proxy the URL is rebuilt from PUBLIC_BASE_URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twilio.request_validator import RequestValidator

from shared.models import MessageStatus

from .types import MalformedReceipt, MessageRef, Receipt, text

STATUSES = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "undelivered": MessageStatus.UNDELIVERED,
    # After the API accepted the message, `failed` (e.g. 63016, outside the 24-hour window) is a
    # delivery failure: ours `failed` means the provider refused the send itself.
    "failed": MessageStatus.UNDELIVERED,
}
# The callback's fields worth keeping to debug it (never the signature).
KEPT = ("MessageSid", "MessageStatus", "ErrorCode", "EventType", "ChannelStatusMessage", "To")


def signature_valid(url: str, params: Mapping[str, Any], signature: str, auth_token: str) -> bool:
    """The twilio SDK's check of X-Twilio-Signature (HMAC-SHA1 with the auth token)."""
    return bool(signature) and RequestValidator(auth_token).validate(url, params, signature)


def parse(params: Mapping[str, Any], message_id: str | None) -> list[Receipt]:
    """The receipt in one status callback's form fields."""
    sid = text(params.get("MessageSid"), "MessageSid")
    provider_status = text(params.get("MessageStatus"), "MessageStatus", limit=32).lower()
    if not sid or not provider_status:
        raise MalformedReceipt("MessageSid and MessageStatus are required.")
    if message_id and not (message_id.isascii() and message_id.isdigit() and len(message_id) < 19):
        raise MalformedReceipt("m must be a message id.")
    error_code = text(params.get("ErrorCode"), "ErrorCode", limit=16)
    reason = text(params.get("ChannelStatusMessage"), "ChannelStatusMessage", limit=500)
    return [
        Receipt(
            provider="whatsapp",
            ref=MessageRef(
                message_pk=int(message_id) if message_id else None, provider_message_id=sid
            ),
            provider_event_id=f"{sid}:{provider_status}",
            provider_status=provider_status,
            status=STATUSES.get(provider_status, ""),
            error_code=error_code,
            reason=reason or (f"Twilio error {error_code}" if error_code else ""),
            raw={name: text(params.get(name), name, limit=500) for name in KEPT if name in params},
        )
    ]
