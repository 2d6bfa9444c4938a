"""Fixtures for the in-process service tests."""

from __future__ import annotations

import pytest
import redis


@pytest.fixture
def broker_queue():
    """The broker's default queue (tests use Redis db 15 as the broker), emptied around the test."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    client.delete("corbi")
    yield client
    client.delete("corbi")
