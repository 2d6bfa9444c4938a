"""Outbox gauges for /metrics: how many messages wait, and how long the oldest has waited."""

from __future__ import annotations

from django.utils import timezone

from shared.models import Message, MessageStatus


def outbox_stats() -> dict[str, float]:
    """Queue depth and the age in seconds of the oldest queued message (for metrics)."""
    pending = Message.objects.filter(status__in=[MessageStatus.QUEUED, MessageStatus.SENDING])
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    return {
        "queued": pending.filter(status=MessageStatus.QUEUED).count(),
        "sending": pending.filter(status=MessageStatus.SENDING).count(),
        "oldest_age": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
    }
