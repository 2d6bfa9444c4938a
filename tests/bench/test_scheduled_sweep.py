"""The scheduled-sweep bench section (bench/pipeline/scheduled.py) run tiny on the test
database: the table's shape, and the sweep's scheduled query on message_scheduled_due."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings

from bench.pipeline import scheduled

# VACUUM and DROP INDEX need real transactions, not the test's wrapping one.
pytestmark = pytest.mark.django_db(transaction=True)


def test_scheduled_sweep_section_tiny() -> None:
    broker = redis.Redis.from_url(settings.REDIS_URL)
    try:
        rows = scheduled.measure(broker, backlogs=(0, 1_000), dues=(0, 10), repeat=2)
    finally:
        broker.flushdb()

    lines = scheduled.table(rows)
    assert len(lines) == 2 + 4  # header, rule, one row per (due, future)
    assert {line.count("|") for line in lines} == {10}
    assert all(len(r["index"]) == len(r["scan"]) == 2 for r in rows)
    with_backlog = [r for r in rows if r["future"] == 1_000]
    assert all(r["index_plan"] == f"Index Scan on {scheduled.INDEX}" for r in with_backlog)
    assert all(scheduled.INDEX not in r["scan_plan"] for r in rows)
    assert "Scheduled sweep, 1,000 future messages (10 due)" in scheduled.summary(rows, 10)


def test_index_is_back_after_the_scan_way() -> None:
    with scheduled.index_dropped():
        assert not scheduled.execute(
            "SELECT 1 FROM pg_indexes WHERE indexname = %s", [scheduled.INDEX]
        )
    assert scheduled.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [scheduled.INDEX])
