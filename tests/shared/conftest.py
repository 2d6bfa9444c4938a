"""Fixtures for the in-process service tests."""

from __future__ import annotations

import pytest
import redis

DB15 = "redis://127.0.0.1:6379/15"  # the metrics, rate-limit and broker-queue tests' own db


@pytest.fixture
def redis15():
    """A client on Redis db 15; tests keep to keys under their own prefix there."""
    client = redis.Redis.from_url(DB15)
    yield client
    client.close()


@pytest.fixture
def broker_queue():
    """The broker's default queue (tests use Redis db 15 as the broker), emptied around the test."""
    client = redis.Redis.from_url(DB15)
    client.delete("corbi")
    yield client
    client.delete("corbi")
