"""The sweeper: re-enqueue what the broker lost, for messages and bookings alike."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from shared.delivery.recording import audit_failed
from shared.models import Booking, BookingStatus, Message, MessageAttempt, MessageStatus
from shared.providers.base import ProviderError
from shared.receipts.apply import receipt_sweep
from shared.services.outbox import (
    DELIVER_MESSAGES,
    SYNC_BOOKING,
    booking_unpublish,
    message_unpublish,
    publish,
)


def _due(waiting: str, now: datetime) -> Q:
    """`waiting` rows due and unpublished, or due and published more than SWEEPER_GRACE_SECONDS
    ago (the broker lost them)."""
    grace = now - timedelta(seconds=settings.SWEEPER_GRACE_SECONDS)
    return Q(status=waiting, next_attempt_at__lte=now) & (
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=grace, next_attempt_at__lte=grace)
    )


def _lost(waiting: str, leased: str, now: datetime) -> Q:
    """Rows the broker lost: `waiting` rows due (see `_due`) and `leased` rows past their lease
    (a worker was killed)."""
    return _due(waiting, now) | Q(status=leased, lease_expires_at__lt=now)


def message_sweep(*, limit: int = 5000) -> list[int]:
    """Re-enqueue what the broker lost: stale queued rows, unpublished rows and expired leases;
    and publish the `scheduled` rows that fell due (turned `queued`; found through the
    message_scheduled_due index), whether or not an ETA task was published for them.

    A row in `sending` past its lease was interrupted (a worker killed): it goes back to
    `queued`. When its provider call had started, `attempts` counted it and the gap in its
    attempt numbers shows that it may have been sent twice; a claim whose call never started
    leaves no trace. A row with DELIVERY_MAX_INTERRUPTIONS started calls without an outcome (a
    poison message) fails instead. Ids are published one integration at a time in turn, so one
    tenant's backlog never fills the first batches (`_publish_per_integration`).
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(_lost(MessageStatus.QUEUED, MessageStatus.SENDING, now))
            .order_by("next_attempt_at")
            .values_list("pk", "status", "attempts", "integration_id")[:limit]
        )
        if len(rows) < limit:
            rows += _due_scheduled(now, limit - len(rows))
        poisoned = _poisoned(rows)
        skipped = set(poisoned)
        ids = [pk for pk, _, _, _ in rows if pk not in skipped]
        if poisoned:
            _fail_poisoned(poisoned, now)
        if ids:
            Message.objects.filter(pk__in=ids).update(
                status=MessageStatus.QUEUED,
                enqueued_at=now,
                lease_expires_at=None,
                rate_slot_at=None,
            )
    for message in Message.objects.filter(pk__in=poisoned).select_related("organization"):
        audit_failed(
            message,
            ProviderError(message.last_error, kind="permanent", provider=message.provider),
        )
    _publish_per_integration({pk: integration for pk, _, _, integration in rows}, ids)
    return ids


def _due_scheduled(now: datetime, limit: int) -> list[tuple[int, str, int, int]]:
    """(pk, status, attempts, integration) of up to `limit` due scheduled rows, locked.

    No grace here, unlike `_due`: a scheduled row still `scheduled` once due has not been
    claimed by its ETA task (which claims it at its time), so that task may be lost (a broker
    flush, a killed worker) and the row goes out within one sweeper interval of its time. In
    the rare race with an ETA task arriving at the same moment the claim decides: one send.
    """
    return list(
        Message.objects.select_for_update(skip_locked=True)
        .filter(status=MessageStatus.SCHEDULED, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", "status", "attempts", "integration_id")[:limit]
    )


def _poisoned(rows: list[tuple[int, str, int, int]]) -> list[int]:
    """The interrupted rows (pk, status, attempts, integration) whose started calls without an
    attempt row number DELIVERY_MAX_INTERRUPTIONS or more."""
    recorded: dict[int, int] = {}
    interrupted = [pk for pk, status, _, _ in rows if status == MessageStatus.SENDING]
    if interrupted:
        recorded = dict(
            MessageAttempt.objects.filter(message_id__in=interrupted)
            .values("message_id")
            .annotate(n=Count("id"))
            .values_list("message_id", "n")
        )
    return [
        pk
        for pk, status, attempts, _ in rows
        if status == MessageStatus.SENDING
        and attempts - recorded.get(pk, 0) >= settings.DELIVERY_MAX_INTERRUPTIONS
    ]


def _fail_poisoned(ids: list[int], now: datetime) -> None:
    text = f"Interrupted {settings.DELIVERY_MAX_INTERRUPTIONS} times mid-send; not retried"
    Message.objects.filter(pk__in=ids).update(
        status=MessageStatus.FAILED,
        failed_at=now,
        lease_expires_at=None,
        last_error=text,
        error_kind="permanent",
        error_code="interrupted",
        updated_at=now,
    )


def _publish_per_integration(integration_of: Mapping[int, int], ids: list[int]) -> None:
    """Publish `ids` taking one id of each integration in turn (due order within each), so one
    tenant's backlog never fills the first batches and each batch spreads over many limits.

    Batches of one integration each were tried: a rate-limited integration then books all of a
    batch's slots at once and all but one send become one-message wave tasks; the chaos run
    drained about 40 % slower. A failure of one integration's limit check already stays with its
    own messages (see `batch._take_slots`), so mixing integrations in a batch is safe.
    """
    queues: dict[int, deque[int]] = {}
    for pk in ids:
        queues.setdefault(integration_of[pk], deque()).append(pk)
    ordered: list[int] = []
    while queues:
        for integration in list(queues):
            ordered.append(queues[integration].popleft())
            if not queues[integration]:
                del queues[integration]
    if ordered and not publish(DELIVER_MESSAGES, ordered):
        message_unpublish(ids)


def booking_sweep(*, limit: int = 1000) -> list[int]:
    """Re-enqueue pending bookings the broker lost and syncs whose lease expired."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Booking.objects.select_for_update(skip_locked=True)
            .filter(_lost(BookingStatus.PENDING, BookingStatus.SYNCING, now))
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Booking.objects.filter(pk__in=ids).update(
                status=BookingStatus.PENDING, enqueued_at=now, lease_expires_at=None
            )
    if ids and not publish(SYNC_BOOKING, ids):
        booking_unpublish(ids)
    return ids


def outbox_sweep() -> dict[str, int]:
    """Sweep messages and bookings (how many of each were re-enqueued), and apply receipts that
    came before their send was recorded (how many)."""
    return {
        "messages": len(message_sweep()),
        "bookings": len(booking_sweep()),
        "receipts": receipt_sweep(),
    }
