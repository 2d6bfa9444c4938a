"""Celery tasks: thin wrappers that load by id, call a service and decide when to run again."""

from __future__ import annotations

import logging
import socket
from functools import lru_cache

import redis
from celery import shared_task
from celery.signals import heartbeat_sent, task_prerun, worker_ready
from django.conf import settings
from django.db import close_old_connections
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.metrics import Metrics
from shared.ratelimit import RateLimiter
from shared.services.bookings import booking_sweep, booking_sync
from shared.services.messages import DeliveryOutcome, message_deliver, message_sweep
from shared.services.outbox import DELIVER_MESSAGE, SYNC_BOOKING, publish

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=2,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


def limiter() -> RateLimiter:
    return RateLimiter(_redis())


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    return Metrics.from_url(settings.REDIS_URL)


def _follow_up(task_name: str, pk: int, outcome: DeliveryOutcome) -> None:
    if outcome.status == "deferred" and outcome.delay is not None:
        publish(task_name, [pk], countdown=max(outcome.delay, 0.0) or None)


@shared_task(name="workers.tasks.deliver_message", ignore_result=True)
def deliver_message(message_id: int) -> str:
    """Deliver one outbound message by id; reschedules itself when told to wait."""
    try:
        outcome = message_deliver(message_id=message_id, limiter=limiter(), metrics=metrics())
    except redis.RedisError as exc:
        # The limiter is unreachable: the row stays queued and the sweeper re-enqueues it.
        logger.warning(
            "Message %s deferred: rate limiter unavailable (%s).", message_id, type(exc).__name__
        )
        return "deferred"
    _follow_up(DELIVER_MESSAGE, message_id, outcome)
    return outcome.status


@shared_task(name="workers.tasks.sync_booking", ignore_result=True)
def sync_booking(booking_pk: int) -> str:
    """Sync one booking to Google Calendar by id."""
    outcome = booking_sync(booking_pk=booking_pk)
    _follow_up(SYNC_BOOKING, booking_pk, outcome)
    return outcome.status


@shared_task(name="workers.tasks.fan_out", ignore_result=True)
def fan_out(task_name: str, ids: list[int]) -> int:
    """Publish one `task_name` task per id (the API hands many ids over in one publish)."""
    if task_name not in (DELIVER_MESSAGE, SYNC_BOOKING):
        raise ValueError(f"fan_out does not publish {task_name!r}")
    from corbi.celery import app

    with app.producer_or_acquire() as producer:
        for pk in ids:
            app.send_task(task_name, args=[int(pk)], producer=producer)
    return len(ids)


@shared_task(name="workers.tasks.sweep_outbox", ignore_result=True)
def sweep_outbox() -> dict[str, int]:
    """Beat: re-enqueue outbox rows the broker lost, unpublished rows and expired leases."""
    swept = {"messages": len(message_sweep()), "bookings": len(booking_sweep())}
    if any(swept.values()):
        logger.info(
            "Sweeper re-enqueued %(messages)d message(s) and %(bookings)d booking(s).", swept
        )
    return swept


@task_prerun.connect
def _recycle_db_connection(**kwargs: object) -> None:
    """Close this thread's DB connection only when it is too old or broke (CONN_MAX_AGE)."""
    close_old_connections()


_hostname = {"name": socket.gethostname()}


@worker_ready.connect
def _ready(sender: object = None, **kwargs: object) -> None:
    _hostname["name"] = str(getattr(sender, "hostname", None) or _hostname["name"])
    metrics().worker_heartbeat(_hostname["name"])


@heartbeat_sent.connect
def _heartbeat(sender: object = None, **kwargs: object) -> None:
    """Record that this worker is alive (for /health/)."""
    eventer = getattr(sender, "eventer", None)
    metrics().worker_heartbeat(str(getattr(eventer, "hostname", None) or _hostname["name"]))
