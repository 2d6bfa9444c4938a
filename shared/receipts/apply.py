"""Store receipts as MessageEvent rows and move message statuses forward, exactly once each."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from shared.events.announce import messages_changed
from shared.models import Integration, Message, MessageEvent, MessageStatus, UnmatchedReceipt
from shared.suppressions import from_receipt

from .types import NOT_YET_SENT, MessageRef, Outcome, Receipt, moves_forward

logger = logging.getLogger(__name__)

FAILURES = frozenset({MessageStatus.UNDELIVERED, MessageStatus.BOUNCED})
_REASONS = {
    MessageStatus.UNDELIVERED: "The provider accepted the message but could not deliver it.",
    MessageStatus.BOUNCED: "The recipient's mail server refused the email.",
}


def record_receipts(
    integrations: Sequence[Integration], receipts: Iterable[Receipt]
) -> Counter[Outcome]:
    """Record each receipt on the messages it names (only messages of `integrations`)."""
    outcomes: Counter[Outcome] = Counter()
    for receipt in receipts:
        message_ids = _find(integrations, receipt.ref)
        if not message_ids and _may_be_early(integrations, receipt.ref):
            UnmatchedReceipt.objects.create(
                integration_ids=[i.pk for i in integrations], receipt=receipt.to_json()
            )
            outcomes[Outcome.EARLY] += 1
        elif not message_ids:
            outcomes[Outcome.UNKNOWN_MESSAGE] += 1
        for message_id in message_ids:
            outcomes[_record(message_id, receipt)] += 1
    return outcomes


def _may_be_early(integrations: Sequence[Integration], ref: MessageRef) -> bool:
    """Only the provider's id names the message, and one of these integrations has a send
    still being recorded (Instagram: its receipts carry nothing of ours)."""
    if ref.message_pk is not None or not ref.provider_message_id:
        return False
    window = timezone.now() - timedelta(seconds=settings.RECEIPT_MATCH_WINDOW_SECONDS)
    return Message.objects.filter(
        integration__in=[i.pk for i in integrations],
        status=MessageStatus.SENDING,
        updated_at__gte=window,
    ).exists()


def _find(integrations: Sequence[Integration], ref: MessageRef) -> list[int]:
    messages = Message.objects.filter(integration__in=[i.pk for i in integrations])
    if ref.message_pk is not None:
        row = messages.filter(pk=ref.message_pk).values_list("pk", "provider_message_id").first()
        # Our id in the callback URL, and the provider's id once we recorded it, must agree.
        if row is None or (
            row[1] and ref.provider_message_id and row[1] != ref.provider_message_id
        ):
            return []
        return [row[0]]
    if ref.provider_message_id:
        found = messages.filter(provider_message_id=ref.provider_message_id)
        return list(found.values_list("pk", flat=True)[:10])
    if ref.recipient and ref.until is not None:
        found = messages.filter(
            to=ref.recipient,
            sent_at__lte=ref.until,
            status__in=[MessageStatus.SENT, MessageStatus.DELIVERED],
        )
        return list(found.order_by("pk").values_list("pk", flat=True)[:1000])
    return []


def _record(message_id: int, receipt: Receipt) -> Outcome:
    event_id = receipt.provider_event_id[:300]
    seen = MessageEvent.objects.filter(message_id=message_id, provider_event_id=event_id)
    if seen.exists():  # providers repeat themselves: a repeat takes no lock and writes nothing
        return Outcome.DUPLICATE
    with transaction.atomic():
        message = Message.objects.select_for_update().get(pk=message_id)
        outcome, applied = decide(message.status, receipt.status)
        event, created = MessageEvent.objects.get_or_create(
            message=message,
            provider_event_id=event_id,
            defaults={
                "organization_id": message.organization_id,
                "provider": receipt.provider,
                "provider_message_id": receipt.ref.provider_message_id[:255],
                "provider_status": receipt.provider_status[:64],
                "status": receipt.status,
                "error_code": receipt.error_code[:64],
                "reason": receipt.reason[:500],
                "occurred_at": receipt.occurred_at,
                "raw": receipt.raw,
                "applied": applied,
            },
        )
        if not created:
            return Outcome.DUPLICATE
        if outcome is Outcome.APPLIED:
            _move(message, event)
        from_receipt(message, receipt)  # a bounce, spam report, opt-out: suppress (never raises)
        return outcome


def decide(current: str, new: str) -> tuple[Outcome, bool | None]:
    """What a receipt saying `new` does to a message at `current`, and its `applied` value."""
    if not new:
        return Outcome.RECORDED, False
    if current in NOT_YET_SENT:
        return Outcome.EARLY, None
    if moves_forward(current, new):
        return Outcome.APPLIED, True
    return Outcome.RECORDED, False


def settle(message: Message, event: MessageEvent) -> Outcome:
    """Apply a stored `event` to `message` (both locked by the caller) if it moves forward and
    is about the send that was recorded (a receipt of an interrupted earlier attempt is not)."""
    recorded, named = message.provider_message_id, event.provider_message_id
    status = event.status if not (recorded and named and recorded != named) else ""
    outcome, event.applied = decide(message.status, status)
    if outcome is Outcome.APPLIED:
        _move(message, event)
    event.save(update_fields=["applied"])
    return outcome


def _move(message: Message, event: MessageEvent) -> None:
    old = message.status
    message.status = event.status
    fields = ["status", "updated_at"]
    if event.status in FAILURES:
        message.last_error = (event.reason or _REASONS[event.status])[:500]
        message.error_kind = event.status
        message.error_code = event.error_code
        fields += ["last_error", "error_kind", "error_code"]
    message.updated_at = timezone.now()
    message.save(update_fields=fields)
    messages_changed([message], old)


def receipt_sweep(*, limit: int = 1000) -> int:
    """Apply receipts that arrived before their send was recorded; return how many settled."""
    return _settle_waiting(limit) + _match_unmatched(limit)


def _match_unmatched(limit: int) -> int:
    """Match kept receipts whose message is now recorded; drop those past the window."""
    expired = timezone.now() - timedelta(seconds=settings.RECEIPT_MATCH_WINDOW_SECONDS)
    dropped, _ = UnmatchedReceipt.objects.filter(received_at__lt=expired).delete()
    if dropped:
        logger.info("Dropped %d receipt(s) for messages never recorded.", dropped)
    settled = 0
    for kept in UnmatchedReceipt.objects.order_by("received_at")[:limit]:
        receipt = Receipt.from_json(kept.receipt)
        integrations = list(Integration.objects.filter(pk__in=kept.integration_ids))
        message_ids = _find(integrations, receipt.ref)
        for message_id in message_ids:
            _record(message_id, receipt)
        if message_ids:
            kept.delete()
            settled += 1
    return settled


def _settle_waiting(limit: int) -> int:
    waiting = (
        MessageEvent.objects.filter(applied__isnull=True)
        .exclude(message__status__in=NOT_YET_SENT)
        .order_by("received_at")
        .values_list("pk", "message_id")[:limit]
    )
    settled = 0
    for event_id, message_id in waiting:
        with transaction.atomic():
            message = Message.objects.select_for_update().get(pk=message_id)
            event = MessageEvent.objects.select_for_update().get(pk=event_id)
            if event.applied is None and settle(message, event) is not Outcome.EARLY:
                settled += 1
    return settled
