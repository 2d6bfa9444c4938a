"""Outbox gauges for /metrics: how many messages wait, and how late the most overdue one is."""

from __future__ import annotations

from django.db.models import Min
from django.utils import timezone

from shared.models import Message, MessageStatus

_WAITING = (MessageStatus.QUEUED, MessageStatus.SENDING)


def outbox_stats() -> dict[str, float]:
    """Counts by status (scheduled, queued, sending) and `oldest_age`: seconds since the most
    overdue message fell due (its send_at, retry time or creation), 0 when none is overdue.

    Measured from the due time, not from creation: a message scheduled a month ahead is not a
    month late when it falls due. Each query is served by a partial index
    (message_pending_due, message_scheduled_due).
    """
    now = timezone.now()
    counts = {
        status: Message.objects.filter(status=status).count()
        for status in (MessageStatus.SCHEDULED, *_WAITING)
    }
    due = [
        Message.objects.filter(status__in=_WAITING, next_attempt_at__lte=now).aggregate(
            first=Min("next_attempt_at")
        )["first"],
        Message.objects.filter(status=MessageStatus.SCHEDULED, next_attempt_at__lte=now).aggregate(
            first=Min("next_attempt_at")
        )["first"],
    ]
    first = min((d for d in due if d is not None), default=None)
    return {
        "scheduled": counts[MessageStatus.SCHEDULED],
        "queued": counts[MessageStatus.QUEUED],
        "sending": counts[MessageStatus.SENDING],
        "oldest_age": (now - first).total_seconds() if first else 0.0,
    }
