"""Instagram (Meta) webhooks: the hub.challenge handshake, X-Hub-Signature-256 on every POST.

The app secret and the verify token belong to the deployment (settings META_APP_SECRET,
META_WEBHOOK_VERIFY_TOKEN), not to one organization; each entry is routed to the integrations
whose `instagram_scoped_id` is the entry's Instagram account id. A read receipt names the last
message read (`read.mid`, or a `watermark` time): it and every earlier message to that person
are read. Our own sends come back as echoes and are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from shared.models import MessageStatus

from .types import MalformedReceipt, MessageRef, Receipt

MAX_ENTRIES = 1000


def signature_valid(raw: bytes, header: str, app_secret: str) -> bool:
    """X-Hub-Signature-256: `sha256=` + hex HMAC-SHA256 of the raw body with the app secret."""
    if not app_secret or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


def parse(raw: bytes) -> dict[str, list[Receipt]]:
    """Receipts by Instagram account id (the entry's `id`)."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise MalformedReceipt("The body must be a JSON object.") from None
    entries = body.get("entry") if isinstance(body, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
        raise MalformedReceipt("The body must have an `entry` list.")
    receipts: dict[str, list[Receipt]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("messaging", []), list):
            raise MalformedReceipt("Each entry must be an object with a `messaging` list.")
        account = str(entry.get("id") or "")
        receipts.setdefault(account, []).extend(
            r for item in entry.get("messaging", []) for r in _receipts(item)
        )
    return receipts


def _receipts(item: Any) -> Iterator[Receipt]:
    if not isinstance(item, dict):
        raise MalformedReceipt("Each messaging item must be an object.")
    person = str((item.get("sender") or {}).get("id") or "")
    stamp = item.get("timestamp")
    occurred = datetime.fromtimestamp(stamp / 1000, UTC) if isinstance(stamp, int) else None
    for key, status in (("read", MessageStatus.READ), ("delivery", MessageStatus.DELIVERED)):
        part = item.get(key)
        if not isinstance(part, dict):
            continue
        mids = [part["mid"]] if isinstance(part.get("mid"), str) else part.get("mids") or []
        for mid in (m for m in mids if isinstance(m, str)):
            yield _receipt(
                key, status, MessageRef(provider_message_id=mid), f"{key}:{mid}", occurred
            )
        watermark = part.get("watermark")
        if isinstance(watermark, int) and person:
            until = datetime.fromtimestamp(watermark / 1000, UTC)
            ref = MessageRef(recipient=person, until=until)
            yield _receipt(key, status, ref, f"{key}:{person}:{watermark}", occurred)


def _receipt(
    key: str, status: str, ref: MessageRef, event_id: str, occurred: datetime | None
) -> Receipt:
    return Receipt(
        provider="instagram",
        ref=ref,
        provider_event_id=event_id,
        provider_status="messaging_seen" if key == "read" else "message_delivery",
        status=status,
        occurred_at=occurred,
        raw={"field": key, "mid": ref.provider_message_id}
        if ref.provider_message_id
        else {"field": key},
    )
