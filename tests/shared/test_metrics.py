"""Worker metrics recorded into the real Redis and exposed as Prometheus text by the collector."""

from __future__ import annotations

import logging
import uuid

import pytest
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import LATENCY, Metrics, RedisMetricsCollector, metrics_text


@pytest.fixture
def metrics(redis15):
    prefix = f"test:metrics:{uuid.uuid4().hex}:"
    yield Metrics(redis15, prefix=prefix)
    for key in redis15.scan_iter(match=prefix + "*"):
        redis15.delete(key)


@pytest.fixture
def unreachable():
    metrics = Metrics.from_url("redis://127.0.0.1:1/15")
    yield metrics
    metrics._redis.close()


def scrape(collector, **kwargs) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} parsed from the exposition text."""
    text = metrics_text(collector, **kwargs).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_sends_retries_and_deferrals_are_counted_by_label(metrics):
    metrics.send_finished("telegram", "sent", 0.03)
    metrics.send_finished("telegram", "sent", 0.2)
    metrics.send_finished("telegram", "failed", 1.5)
    metrics.send_finished("sendgrid", "rate_limited", 0.07)
    metrics.retry_scheduled("telegram", "transient")
    metrics.retry_scheduled("telegram", "transient")
    metrics.rate_limit_deferred("telegram", "our_limit")
    metrics.rate_limit_deferred("whatsapp", "provider_429")

    samples = scrape(RedisMetricsCollector(metrics))

    assert samples[("corbi_sends_total", (("outcome", "sent"), ("provider", "telegram")))] == 2
    assert samples[("corbi_sends_total", (("outcome", "failed"), ("provider", "telegram")))] == 1
    assert (
        samples[("corbi_sends_total", (("outcome", "rate_limited"), ("provider", "sendgrid")))] == 1
    )
    assert (
        samples[("corbi_retries_total", (("provider", "telegram"), ("reason", "transient")))] == 2
    )
    deferrals = "corbi_rate_limit_deferrals_total"
    assert samples[(deferrals, (("provider", "telegram"), ("scope", "our_limit")))] == 1
    assert samples[(deferrals, (("provider", "whatsapp"), ("scope", "provider_429")))] == 1
    assert samples[("corbi_metrics_store_up", ())] == 1


def test_latency_histogram_buckets_are_cumulative_with_count_and_sum(metrics):
    for seconds in (0.03, 0.05, 0.2, 0.2, 1.5, 12.0):
        metrics.send_finished("telegram", "sent", seconds)
    metrics.send_finished("sendgrid", "sent", 0.3)

    samples = scrape(RedisMetricsCollector(metrics))

    def bucket(provider, le):
        labels = (("le", le), ("provider", provider))
        return samples[("corbi_provider_latency_seconds_bucket", labels)]

    expected = {
        "0.05": 2, "0.1": 2, "0.25": 4, "0.5": 4, "1.0": 4,
        "2.5": 5, "5.0": 5, "10.0": 5, "+Inf": 6,
    }  # fmt: skip
    assert {le: bucket("telegram", le) for le in expected} == expected
    telegram = (("provider", "telegram"),)
    assert samples[("corbi_provider_latency_seconds_count", telegram)] == 6
    assert samples[("corbi_provider_latency_seconds_sum", telegram)] == pytest.approx(13.98)
    assert bucket("sendgrid", "0.25") == 0
    assert bucket("sendgrid", "0.5") == 1
    assert samples[("corbi_provider_latency_seconds_count", (("provider", "sendgrid"),))] == 1


def test_labels_that_are_not_slugs_are_recorded_as_other(metrics):
    metrics.send_finished("telegram", "chat 4242 <bob@example.com>", 0.1)

    samples = scrape(RedisMetricsCollector(metrics))

    assert samples[("corbi_sends_total", (("outcome", "other"), ("provider", "telegram")))] == 1
    assert "example.com" not in metrics_text(RedisMetricsCollector(metrics)).decode()


def test_a_nonsense_duration_is_observed_as_zero_and_keeps_recording(metrics):
    metrics.send_finished("telegram", "sent", float("nan"))
    metrics.send_finished("telegram", "sent", -1.0)
    metrics.send_finished("telegram", "sent", 0.2)

    samples = scrape(RedisMetricsCollector(metrics))

    telegram = (("provider", "telegram"),)
    assert samples[("corbi_provider_latency_seconds_count", telegram)] == 3
    assert samples[("corbi_provider_latency_seconds_sum", telegram)] == pytest.approx(0.2)
    labels = (("le", "0.05"), ("provider", "telegram"))
    assert samples[("corbi_provider_latency_seconds_bucket", labels)] == 2


def test_gauges_from_the_caller_are_exposed_alongside(metrics):
    def gauges():
        depth = GaugeMetricFamily("corbi_queue_depth", "Queued messages.", labels=["provider"])
        depth.add_metric(["telegram"], 7)
        yield depth

    samples = scrape(RedisMetricsCollector(metrics, gauges))

    assert samples[("corbi_queue_depth", (("provider", "telegram"),))] == 7


def test_process_metrics_are_optional(metrics):
    with_process = scrape(RedisMetricsCollector(metrics))
    without = scrape(RedisMetricsCollector(metrics), process_metrics=False)

    assert any(name.startswith("process_") for name, _ in with_process)
    assert not any(name.startswith("process_") for name, _ in without)


def test_recording_with_redis_unreachable_does_not_raise_and_warns_once(unreachable, caplog):
    with caplog.at_level(logging.WARNING, logger="shared.metrics"):
        unreachable.send_finished("telegram", "sent", 0.1)
        unreachable.retry_scheduled("telegram", "transient")
        unreachable.rate_limit_deferred("telegram", "our_limit")
        unreachable.worker_heartbeat("celery@worker-1")

    assert len(caplog.records) == 1


def test_scraping_with_redis_unreachable_reports_the_store_down(unreachable):
    samples = scrape(RedisMetricsCollector(unreachable))

    assert samples[("corbi_metrics_store_up", ())] == 0
    assert not any(name.startswith("corbi_sends") for name, _ in samples)


def test_heartbeat_makes_a_worker_seen(metrics):
    metrics.worker_heartbeat("celery@worker-1")
    metrics.worker_heartbeat("celery@worker-2")

    assert metrics.workers_seen_within(60) == ["celery@worker-1", "celery@worker-2"]


def test_a_worker_silent_for_longer_is_not_seen(metrics, redis15):
    metrics.worker_heartbeat("celery@fresh")
    now_s, _ = redis15.time()
    redis15.hset(metrics._prefix + "workers", "celery@stale", now_s - 120)

    assert metrics.workers_seen_within(60) == ["celery@fresh"]
    assert metrics.workers_seen_within(300) == ["celery@fresh", "celery@stale"]


def test_a_heartbeat_forgets_workers_silent_for_a_day(metrics, redis15):
    now_s, _ = redis15.time()
    redis15.hset(metrics._prefix + "workers", "celery@gone", now_s - 2 * 86_400)

    metrics.worker_heartbeat("celery@fresh")

    assert metrics.workers_seen_within(10 * 86_400) == ["celery@fresh"]


def test_sends_finished_records_what_the_same_send_finished_calls_would(metrics, redis15):
    one_by_one = metrics
    together = Metrics(redis15, prefix=f"test:metrics:{uuid.uuid4().hex}:")
    sends = [
        ("telegram", "sent", 0.03),
        ("telegram", "sent", 0.2),
        ("telegram", "failed", 1.5),
        ("sendgrid", "sent", 0.3),
        ("sendgrid", "rate_limited", 0.07),
        ("telegram", "sent", float("nan")),
        ("whatsapp", "chat 4242 <bob@example.com>", 12.0),
        ("telegram", "sent", 0.1),
    ]
    try:
        for send in sends:
            one_by_one.send_finished(*send)
        together.sends_finished(iter(sends))

        expected, got = one_by_one.snapshot(), together.snapshot()
    finally:
        for key in redis15.scan_iter(match=together._prefix + "*"):
            redis15.delete(key)

    def split(snapshot):
        latency = snapshot[LATENCY]
        sums = {f: float(v) for f, v in latency.items() if f.endswith("|sum")}
        rest = {name: fields for name, fields in snapshot.items() if name != LATENCY}
        buckets = {f: v for f, v in latency.items() if not f.endswith("|sum")}
        return rest, buckets, sums

    expected_rest, expected_buckets, expected_sums = split(expected)
    assert expected_rest["sends_total"]["telegram|sent"] == "4"
    assert split(got)[:2] == (expected_rest, expected_buckets)
    assert split(got)[2] == pytest.approx(expected_sums)
    assert sorted(expected_sums) == ["sendgrid|sum", "telegram|sum", "whatsapp|sum"]


def test_sends_finished_with_nothing_writes_nothing(metrics, redis15):
    metrics.sends_finished([])

    assert list(redis15.scan_iter(match=metrics._prefix + "*")) == []
