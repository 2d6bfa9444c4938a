"""corbi.broker.Channel: one redis.Redis per connection pool for publishes, not one per publish."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from kombu import Connection


@pytest.fixture
def channel():
    with Connection(settings.CELERY_BROKER_URL, transport="corbi.broker:Transport") as conn:
        yield conn.default_channel


def test_publishes_share_one_client_per_pool_and_a_new_pool_gets_a_new_one(channel):
    first = channel._create_client()
    assert channel._create_client() is first
    assert first.connection_pool is channel.pool
    assert channel._create_client(asynchronous=True) is not first

    channel._disconnect_pools()  # as kombu does after a fork

    again = channel._create_client()
    assert again is not first and again.connection_pool is channel.pool


def test_messages_still_reach_the_queue(channel):
    queue = f"test-broker-{uuid.uuid4().hex}"
    channel.queue_declare(queue, auto_delete=False)
    try:
        for body in ("one", "two"):
            channel.basic_publish(channel.prepare_message(body), exchange="", routing_key=queue)
        channel._disconnect_pools()
        channel.basic_publish(channel.prepare_message("three"), exchange="", routing_key=queue)

        got = [channel.basic_get(queue, no_ack=True) for _ in range(3)]
        assert [m.body for m in got] == [b"one", b"two", b"three"]
    finally:
        channel.queue_delete(queue)
