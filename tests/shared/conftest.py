"""Fixtures for the in-process service tests."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings

from shared.metrics import Metrics
from shared.ratelimit import RateLimiter


@pytest.fixture
def broker_queue():
    """The broker's default queue (tests use Redis db 15 as the broker), emptied around the test."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    client.delete("corbi")
    yield client
    client.delete("corbi")


@pytest.fixture
def tools():
    """(RateLimiter, Metrics) on the test Redis under a fresh key prefix, removed afterwards."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = f"test:{uuid.uuid4().hex}:"
    yield RateLimiter(client, prefix=prefix + "rl:"), Metrics(client, prefix=prefix + "m:")
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
