"""GET /metrics: Prometheus text covering the web process, the workers (via Redis) and the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from shared.delivery.stats import outbox_stats
from shared.events.stats import event_gauges
from shared.metrics import GuardedCollector, Metrics, RedisMetricsCollector, metrics_text


def store() -> Metrics:
    """The metrics store at settings.REDIS_URL (one client per URL, reused)."""
    return _store_at(settings.REDIS_URL)


@lru_cache(maxsize=4)
def _store_at(url: str) -> Metrics:
    return Metrics.from_url(url)


def _worker_gauges() -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "corbi_workers_alive",
        "Workers that sent a heartbeat within WORKER_HEARTBEAT_WINDOW_SECONDS.",
        value=len(store().workers_seen_within(settings.WORKER_HEARTBEAT_WINDOW_SECONDS)),
    )


def _outbox_gauges() -> Iterator[Metric]:
    stats = outbox_stats()
    depth = GaugeMetricFamily(
        "corbi_outbox_messages", "Messages not yet terminal, by status.", labels=["status"]
    )
    depth.add_metric(["scheduled"], stats["scheduled"])
    depth.add_metric(["queued"], stats["queued"])
    depth.add_metric(["sending"], stats["sending"])
    yield depth
    yield GaugeMetricFamily(
        "corbi_outbox_oldest_age_seconds",
        "Seconds since the most overdue scheduled, queued or sending message fell due "
        "(its send_at, retry time or creation); 0 when none is overdue.",
        value=stats["oldest_age"],
    )
    yield from event_gauges()


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Each source fails alone: Redis down gives corbi_metrics_store_up 0, the database down
    gives corbi_database_up 0, and the scrape still answers 200 with whatever else it read."""
    body = metrics_text(
        RedisMetricsCollector(store(), gauges=_worker_gauges),
        GuardedCollector(
            "corbi_database_up", "1 if the outbox could be read from the database.", _outbox_gauges
        ),
    )
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
