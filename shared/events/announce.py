"""Tell the product about a status change: events out (emit) and the in-process signal.

Called by the delivery and receipt code inside the transaction that changed the rows, so an
event exists exactly when its change committed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from shared.events import emit, emit_many
from shared.events.signals import message_status_changed
from shared.events.types import (
    BOOKING_FAILED,
    BOOKING_SYNCED,
    INTEGRATION_CREDENTIALS_REJECTED,
    MESSAGE_EVENT_FOR_STATUS,
    message_event_data,
)
from shared.models import Booking, Integration, Message


def messages_changed(messages: Sequence[Message], old_status: str) -> None:
    """`messages` (already carrying their new status) moved from `old_status`: one
    message.<status> event each (one endpoint lookup per organization) and the signal."""
    by_org: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for message in messages:
        kind = MESSAGE_EVENT_FOR_STATUS.get(message.status)
        if kind is not None:
            by_org[message.organization_id].append((kind, message_event_data(message)))
    for organization_id, events in by_org.items():
        emit_many(organization_id, events)
    for message in messages:
        message_status_changed.send(
            sender=Message, message=message, old_status=old_status, new_status=message.status
        )


def booking_finished(booking: Booking, *, synced: bool, reason: str = "") -> None:
    """booking.synced or booking.failed (with the reason)."""
    data: dict[str, Any] = {
        "booking_id": booking.booking_id,
        "event_id": booking.event_id,
        "version": booking.version,
        "cancelled": booking.cancelled,
        "status": "synced" if synced else "failed",
    }
    if not synced:
        data["reason"] = reason
    emit(booking.organization_id, BOOKING_SYNCED if synced else BOOKING_FAILED, data)


def credentials_rejected(integration: Integration, *, reason: str, code: str = "") -> None:
    """integration.credentials_rejected: a person must fix this provider's credentials."""
    emit(
        integration.organization_id,
        INTEGRATION_CREDENTIALS_REJECTED,
        {"provider": integration.provider, "reason": reason, "code": code or None},
    )
