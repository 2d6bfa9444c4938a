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
from datetime import datetime
from typing import Any

from shared.models import MessageStatus

from .types import MalformedReceipt, MessageRef, Receipt, moment, text

MAX_ENTRIES = 1000


def signature_valid(raw: bytes, header: str, app_secret: str) -> bool:
    """X-Hub-Signature-256: `sha256=` + hex HMAC-SHA256 of the raw body with the app secret."""
    if not app_secret or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").encode(errors="replace"))


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
        account = text(entry.get("id"), "entry.id", limit=64)
        receipts.setdefault(account, []).extend(
            r for item in entry.get("messaging", []) for r in _receipts(item)
        )
    return receipts


def _receipts(item: Any) -> Iterator[Receipt]:
    if not isinstance(item, dict) or not isinstance(item.get("sender") or {}, dict):
        raise MalformedReceipt("Each messaging item must be an object with a `sender` object.")
    person = text((item.get("sender") or {}).get("id"), "sender.id", limit=64)
    occurred = moment(item.get("timestamp"), "timestamp", per_second=1000)
    for key, status in (("read", MessageStatus.READ), ("delivery", MessageStatus.DELIVERED)):
        part = item.get(key)
        if not isinstance(part, dict):
            continue
        mids = [part["mid"]] if "mid" in part else part.get("mids") or []
        if not isinstance(mids, list) or len(mids) > 1000:
            raise MalformedReceipt(f"{key}.mids must be a list of message ids.")
        for mid in (text(m, f"{key}.mid") for m in mids):
            if mid:
                ref = MessageRef(provider_message_id=mid)
                yield _receipt(key, status, ref, f"{key}:{mid}", occurred)
        until = moment(part.get("watermark"), f"{key}.watermark", per_second=1000)
        if until is not None and person:
            ref = MessageRef(recipient=person, until=until)
            event_id = f"{key}:{person}:{part['watermark']}"
            yield _receipt(key, status, ref, event_id, occurred)


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
