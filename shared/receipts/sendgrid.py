"""SendGrid Event Webhook batches, verified with the sendgrid SDK's EventWebhook (ECDSA P-256).

The verification key is public and stored in the integration's `extra`; the timestamp must be
recent (SENDGRID_EVENT_MAX_AGE_SECONDS): the SDK checks only the signature, so an old signed
batch could otherwise be replayed. Events are matched by the `corbi_reference` custom argument
each send carries (`msg-<id>`), else by the X-Message-Id prefix of `sg_message_id`.
"""

from __future__ import annotations

import binascii
import json
import time
from typing import Any

from django.conf import settings
from sendgrid.helpers.eventwebhook import EventWebhook

from shared.models import MessageStatus

from .types import MalformedReceipt, MessageRef, Receipt, moment, text

STATUSES = {
    "delivered": MessageStatus.DELIVERED,
    "open": MessageStatus.READ,
    "click": MessageStatus.READ,
    "bounce": MessageStatus.BOUNCED,
    "dropped": MessageStatus.UNDELIVERED,
}
KEPT = ("event", "sg_event_id", "sg_message_id", "reason", "status", "type", "response", "attempt")
MAX_EVENTS = 10_000


def signature_valid(raw: bytes, signature: str, timestamp: str, public_key: str) -> bool:
    """True when the batch is signed by `public_key` and its timestamp is recent."""
    if not (signature and timestamp and public_key and timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(time.time() - int(timestamp)) > settings.SENDGRID_EVENT_MAX_AGE_SECONDS:
        return False
    webhook = EventWebhook()
    try:
        key = webhook.convert_public_key_to_ecdsa(public_key)
        return bool(webhook.verify_signature(raw.decode("utf-8"), signature, timestamp, key))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        return False


def parse(raw: bytes) -> list[Receipt]:
    """The receipts in one signed batch (a JSON array of events)."""
    try:
        events = json.loads(raw)
    except ValueError:
        raise MalformedReceipt("The body must be a JSON array of events.") from None
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise MalformedReceipt(f"The body must be a JSON array of at most {MAX_EVENTS} events.")
    return [_receipt(event) for event in events]


def _receipt(event: Any) -> Receipt:
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise MalformedReceipt("Each event must be an object with an `event`.")
    name = text(event["event"], "event", limit=32)
    reference = text(event.get("corbi_reference"), "corbi_reference", limit=40)
    number = reference.removeprefix("msg-")
    message_pk = int(number) if reference.startswith("msg-") and number.isdigit() else None
    sg_message_id = text(event.get("sg_message_id"), "sg_message_id")
    stamp = event.get("timestamp")
    event_id = text(event.get("sg_event_id"), "sg_event_id") or f"{sg_message_id}:{name}:{stamp}"
    return Receipt(
        provider="sendgrid",
        ref=MessageRef(
            message_pk=message_pk if message_pk and message_pk < 2**63 else None,
            provider_message_id=sg_message_id.split(".")[0],
        ),
        provider_event_id=event_id,
        provider_status=name,
        status=STATUSES.get(name, ""),
        error_code=text(event.get("status"), "status", limit=64),
        reason=text(event.get("reason") or event.get("response"), "reason", limit=2000)[:500],
        occurred_at=moment(stamp, "timestamp"),
        raw={key: text(event[key], key, limit=2000) for key in KEPT if event.get(key) is not None},
    )
