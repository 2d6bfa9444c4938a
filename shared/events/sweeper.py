"""Re-publish event deliveries the broker lost: unpublished or long-overdue pending rows, and
rows whose sending lease expired (a worker was killed mid-POST: sent again, at least once)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from shared.events import DELIVER_EVENT, deliveries_unpublish
from shared.events.models import DeliveryStatus, EventDelivery


def event_sweep(*, limit: int = 5000) -> list[int]:
    """Re-enqueue lost deliveries (`SELECT … FOR UPDATE SKIP LOCKED`, so concurrent sweeps
    share the work) and publish them; the ids re-enqueued."""
    from shared.services.outbox import publish

    now = timezone.now()
    grace = now - timedelta(seconds=settings.SWEEPER_GRACE_SECONDS)
    due = Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) & (
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=grace, next_attempt_at__lte=grace)
    )
    expired = Q(status=DeliveryStatus.SENDING, lease_expires_at__lt=now)
    with transaction.atomic():
        ids = list(
            EventDelivery.objects.select_for_update(skip_locked=True)
            .filter(due | expired)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            EventDelivery.objects.filter(pk__in=ids).update(
                status=DeliveryStatus.PENDING,
                enqueued_at=now,
                lease_expires_at=None,
                next_attempt_at=now,
            )
    if ids and not publish(DELIVER_EVENT, ids, fan_out=False):
        deliveries_unpublish(ids)
    return ids
