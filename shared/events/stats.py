"""Prometheus gauges of the event-delivery outbox, read from the database."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from shared.events.models import DeliveryStatus, EventDelivery

OPEN = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


def event_gauges() -> Iterator[Metric]:
    """corbi_event_deliveries{status} (not yet final) and the oldest one's age in seconds."""
    rows = (
        EventDelivery.objects.filter(status__in=OPEN)
        .values("status")
        .annotate(n=Count("id"), oldest=Min("created_at"))
    )
    counts = {status: 0 for status in OPEN}
    oldest = None
    for row in rows:
        counts[row["status"]] = row["n"]
        oldest = row["oldest"] if oldest is None else min(oldest, row["oldest"])
    depth = GaugeMetricFamily(
        "corbi_event_deliveries",
        "Webhook event deliveries not yet delivered or failed, by status.",
        labels=["status"],
    )
    for status in OPEN:
        depth.add_metric([str(status)], counts[status])
    yield depth
    age = (timezone.now() - oldest).total_seconds() if oldest is not None else 0.0
    yield GaugeMetricFamily(
        "corbi_event_oldest_undelivered_age_seconds",
        "Age of the oldest webhook event delivery still pending or sending.",
        value=max(0.0, age),
    )
