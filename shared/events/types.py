"""The event types sent to webhook endpoints, and the data of a message event."""

from __future__ import annotations

from typing import Any

MESSAGE_SENT = "message.sent"
MESSAGE_DELIVERED = "message.delivered"
MESSAGE_READ = "message.read"
MESSAGE_FAILED = "message.failed"  # failed, undelivered, bounced or refused; carries the reason
MESSAGE_CANCELLED = "message.cancelled"  # cancelled before its send started (POST …/cancel/)
BOOKING_SYNCED = "booking.synced"
BOOKING_FAILED = "booking.failed"
INTEGRATION_CREDENTIALS_REJECTED = "integration.credentials_rejected"

EVENT_TYPES: tuple[str, ...] = (
    MESSAGE_SENT,
    MESSAGE_DELIVERED,
    MESSAGE_READ,
    MESSAGE_FAILED,
    MESSAGE_CANCELLED,
    BOOKING_SYNCED,
    BOOKING_FAILED,
    INTEGRATION_CREDENTIALS_REJECTED,
)

# A message status (shared.models.MessageStatus) → the event announcing it.
MESSAGE_EVENT_FOR_STATUS = {
    "sent": MESSAGE_SENT,
    "delivered": MESSAGE_DELIVERED,
    "read": MESSAGE_READ,
    "undelivered": MESSAGE_FAILED,
    "bounced": MESSAGE_FAILED,
    "failed": MESSAGE_FAILED,
    "cancelled": MESSAGE_CANCELLED,
}


def message_event_data(message: Any, *, reason: str = "", error_code: str = "") -> dict[str, Any]:
    """The `data` of a message.* event: ids, provider, status and, for failures, the reason.

    Never the destination's credentials or a token; `reason` and `error_code` default to the
    message's own `last_error` / `error_code`.
    """
    data: dict[str, Any] = {
        "message_id": message.pk,
        "idempotency_key": message.idempotency_key,
        "provider": message.provider,
        "provider_message_id": message.provider_message_id or None,
        "status": message.status,
    }
    if MESSAGE_EVENT_FOR_STATUS.get(message.status) == MESSAGE_FAILED:
        data["error_code"] = error_code or message.error_code or None
        data["reason"] = reason or message.last_error or None
    return data
