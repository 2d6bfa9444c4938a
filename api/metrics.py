"""GET /metrics: Prometheus text covering the web process, the workers (via Redis) and the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from shared.metrics import Metrics, RedisMetricsCollector, metrics_text
from shared.services.messages import outbox_stats


@lru_cache(maxsize=1)
def store() -> Metrics:
    return Metrics.from_url(settings.REDIS_URL)


def _outbox_gauges() -> Iterator[Metric]:
    stats = outbox_stats()
    depth = GaugeMetricFamily(
        "corbi_outbox_messages", "Messages not yet terminal, by status.", labels=["status"]
    )
    depth.add_metric(["queued"], stats["queued"])
    depth.add_metric(["sending"], stats["sending"])
    yield depth
    yield GaugeMetricFamily(
        "corbi_outbox_oldest_age_seconds",
        "Age of the oldest message still queued or sending.",
        value=stats["oldest_age"],
    )
    yield GaugeMetricFamily(
        "corbi_workers_alive",
        "Workers that sent a heartbeat within WORKER_HEARTBEAT_WINDOW_SECONDS.",
        value=len(store().workers_seen_within(settings.WORKER_HEARTBEAT_WINDOW_SECONDS)),
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    body = metrics_text(RedisMetricsCollector(store(), gauges=_outbox_gauges))
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
