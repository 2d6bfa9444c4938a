"""Prometheus metrics for web and worker processes: workers record into Redis, the web's /metrics reads it.

Labels are only slugs chosen by our code: provider, outcome, reason, scope. Never pass a
destination, token, org secret or free error text as a label; values that are not short slugs
are recorded as "other". Recording never raises: after a Redis failure events are dropped
for a few seconds (logged at most once a minute) and the send goes on. Build it with
`Metrics.from_url`, whose client gives up fast, or pass a client with short timeouts and no retries.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)

# Redis hash -> (metric name, help, label names); fields are the label values joined by "|".
COUNTERS = {
    "sends_total": (
        "corbi_sends_total",
        "Provider deliveries finished, by outcome.",
        ("provider", "outcome"),
    ),
    "retries_total": ("corbi_retries_total", "Retries scheduled.", ("provider", "reason")),
    "receipts_total": (
        "corbi_receipts_total",
        "Provider receipts received, by outcome (applied, recorded, early, duplicate, "
        "unknown_message, bad_signature, malformed).",
        ("provider", "outcome"),
    ),
    "rate_limit_deferrals_total": (
        "corbi_rate_limit_deferrals_total",
        "Sends deferred by our limiter (our_limit) or the provider's 429 (provider_429).",
        ("provider", "scope"),
    ),
    "event_deliveries_total": (
        "corbi_event_deliveries_total",
        "Webhook delivery attempts finished, by outcome (delivered, retry, failed, disabled).",
        ("outcome",),
    ),
}
LATENCY = "latency_seconds"
WORKERS = "workers"
WORKERS_FORGOTTEN_AFTER = 86_400
WARN_EVERY = 60.0
PAUSE_AFTER_FAILURE = 5.0

_SLUG = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# Stamps the worker with Redis server time (so hosts agree) and forgets long-silent ones.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.3f', now))
local seen = redis.call('HGETALL', KEYS[1])
for i = 1, #seen, 2 do
  if now - tonumber(seen[i + 1]) > tonumber(ARGV[2]) then redis.call('HDEL', KEYS[1], seen[i]) end
end
"""


def _label(value: str) -> str:
    return value if _SLUG.fullmatch(value) else "other"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Metrics:
    """Records delivery events into Redis hashes, one round trip per call."""

    def __init__(self, redis_client: redis.Redis, *, prefix: str = "corbi:metrics:") -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._heartbeat = redis_client.register_script(_HEARTBEAT)
        self._paused_until = -math.inf
        self._last_warning = -math.inf
        self._dropped = 0

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "corbi:metrics:") -> Metrics:
        """Metrics over a client that gives up fast: 0.5 s timeouts and no retries (redis-py's
        default retries for seconds, which would stall every send while Redis is down)."""
        client = redis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, prefix=prefix)

    def send_finished(self, provider: str, outcome: str, seconds: float) -> None:
        """Count one finished delivery (corbi_sends_total) and observe its provider latency."""
        self.sends_finished([(provider, outcome, seconds)])

    def sends_finished(self, sends: Iterable[tuple[str, str, float]]) -> None:
        """`send_finished` for many (provider, outcome, seconds) in one round trip."""
        sends_total: Counter[str] = Counter()
        buckets: Counter[str] = Counter()
        sums: dict[str, float] = {}
        for provider, outcome, seconds in sends:
            provider = _label(provider)
            seconds = seconds if math.isfinite(seconds) and seconds > 0 else 0.0
            le = LATENCY_BUCKETS[bisect.bisect_left(LATENCY_BUCKETS, seconds)]
            sends_total[f"{provider}|{_label(outcome)}"] += 1
            buckets[f"{provider}|{floatToGoString(le)}"] += 1
            sums[f"{provider}|sum"] = sums.get(f"{provider}|sum", 0.0) + seconds
        if not sends_total:
            return
        latency = self._prefix + LATENCY
        pipe = self._redis.pipeline()
        for field, count in sends_total.items():
            pipe.hincrby(self._prefix + "sends_total", field, count)
        for field, count in buckets.items():
            pipe.hincrby(latency, field, count)
        for field, total in sums.items():
            pipe.hincrbyfloat(latency, field, total)
        self._record(pipe.execute)

    def receipts_received(self, provider: str, outcomes: Mapping[str, int]) -> None:
        """Count receipts by outcome (corbi_receipts_total)."""
        for outcome, count in outcomes.items():
            if count:
                self._count("receipts_total", provider, outcome, by=count)

    def retry_scheduled(self, provider: str, reason: str) -> None:
        """Count one scheduled retry (corbi_retries_total)."""
        self._count("retries_total", provider, reason)

    def rate_limit_deferred(self, provider: str, scope: str, count: int = 1) -> None:
        """Count `count` deferrals (corbi_rate_limit_deferrals_total); scope is our_limit or
        provider_429."""
        self._count("rate_limit_deferrals_total", provider, scope, by=count)

    def event_delivery_finished(self, outcome: str) -> None:
        """Count one webhook delivery attempt (corbi_event_deliveries_total)."""
        self._count("event_deliveries_total", outcome)

    def worker_heartbeat(self, hostname: str) -> None:
        """Mark `hostname` as alive now (Redis server time)."""
        key = self._prefix + WORKERS
        self._record(lambda: self._heartbeat(keys=[key], args=[hostname, WORKERS_FORGOTTEN_AFTER]))

    def workers_seen_within(self, seconds: float) -> list[str]:
        """Hostnames whose last heartbeat is at most `seconds` old, sorted. Raises redis.RedisError."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(self._prefix + WORKERS)
        (now_s, now_us), seen = pipe.execute()
        now = now_s + now_us / 1_000_000
        return sorted(_text(host) for host, at in seen.items() if now - float(at) <= seconds)

    def snapshot(self) -> dict[str, dict[str, str]]:
        """Every recorded hash as {name: {field: value}}, read in one round trip. Raises redis.RedisError."""
        names = [*COUNTERS, LATENCY]
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self._prefix + name)
        return {
            name: {_text(field): _text(value) for field, value in values.items()}
            for name, values in zip(names, pipe.execute(), strict=True)
        }

    def _count(self, name: str, *labels: str, by: int = 1) -> None:
        field = "|".join(map(_label, labels))
        self._record(lambda: self._redis.hincrby(self._prefix + name, field, by))

    def _record(self, write: Callable[[], object]) -> None:
        now = time.monotonic()
        if now < self._paused_until:
            self._dropped += 1
            return
        try:
            write()
        except redis.RedisError as error:
            self._dropped += 1
            self._paused_until = now + PAUSE_AFTER_FAILURE
            if now - self._last_warning >= WARN_EVERY:
                logger.warning(
                    "metrics paused, %d events dropped: %s: %s",
                    self._dropped,
                    type(error).__name__,
                    error,
                )
                self._last_warning, self._dropped = now, 0


class GuardedCollector:
    """A prometheus_client collector whose source may be down: it yields `families()` whole, or
    none of them, plus an `up_name` gauge (1 or 0) saying which, so one failing source (Redis,
    the database) never fails the whole scrape."""

    def __init__(
        self, up_name: str, up_help: str, families: Callable[[], Iterable[Metric]]
    ) -> None:
        self._up_name = up_name
        self._up_help = up_help
        self._families = families

    def collect(self) -> Iterator[Metric]:
        try:
            # Materialised first: a source failing half-way must not leave half its families.
            collected: list[Metric] | None = list(self._families())
        except Exception as error:  # any failure of the source means "down" to the scrape
            logger.warning("%s = 0: %s: %s", self._up_name, type(error).__name__, error)
            collected = None
        yield GaugeMetricFamily(self._up_name, self._up_help, value=0 if collected is None else 1)
        yield from collected or ()


class RedisMetricsCollector(GuardedCollector):
    """The Redis-held metrics plus whatever `gauges()` yields (also read from Redis), reported
    under corbi_metrics_store_up."""

    def __init__(
        self, metrics: Metrics, gauges: Callable[[], Iterable[Metric]] | None = None
    ) -> None:
        super().__init__(
            "corbi_metrics_store_up", "1 if worker metrics could be read from Redis.", self._read
        )
        self._metrics = metrics
        self._gauges = gauges

    def _read(self) -> Iterator[Metric]:
        snapshot = self._metrics.snapshot()
        yield from _counters(snapshot)
        yield _histogram(snapshot[LATENCY])
        if self._gauges is not None:
            yield from self._gauges()


def _counters(snapshot: dict[str, dict[str, str]]) -> Iterator[Metric]:
    for name, (metric, help_text, labels) in COUNTERS.items():
        family = CounterMetricFamily(metric, help_text, labels=labels)
        for field, value in sorted(snapshot[name].items()):
            family.add_metric(field.split("|"), float(value))
        yield family


def _histogram(fields: dict[str, str]) -> Metric:
    family = HistogramMetricFamily(
        "corbi_provider_latency_seconds",
        "Seconds spent in one provider call.",
        labels=("provider",),
    )
    providers = sorted({field.split("|")[0] for field in fields})
    for provider in providers:
        cumulative, buckets = 0, []
        for bound in LATENCY_BUCKETS:
            le = floatToGoString(bound)
            cumulative += int(fields.get(f"{provider}|{le}", 0))
            buckets.append((le, cumulative))
        family.add_metric([provider], buckets, float(fields.get(f"{provider}|sum", 0)))
    return family


def metrics_text(*collectors: Collector, process_metrics: bool = True) -> bytes:
    """The text exposition of `collectors` (and, by default, this process's own metrics)."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return generate_latest(registry)
