"""Fixtures for the service tests: what the services published to the broker."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from django.conf import settings

QUEUE = "corbi"  # the broker's default queue


@pytest.fixture
def published():
    """published() -> [(task name, args)] sent to the configured broker since the last call.

    Reads the queue of settings.CELERY_BROKER_URL (the REDIS_URL of this run), emptied around
    the test, so services are observed through the real broker rather than a mock.
    """
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(QUEUE)

    def drain() -> list[tuple[str, list]]:
        found = []
        for raw in client.lrange(QUEUE, 0, -1):
            envelope = json.loads(raw)
            args = json.loads(base64.b64decode(envelope["body"]))[0]
            found.append((envelope["headers"]["task"], args))
        client.delete(QUEUE)
        return found

    yield drain
    client.delete(QUEUE)
