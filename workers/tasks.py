"""Celery tasks: thin wrappers that load by id, call a service and decide when to run again."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import redis
from celery import shared_task
from celery.signals import celeryd_after_setup, heartbeat_sent, task_prerun, worker_ready
from django.conf import settings
from django.db import close_old_connections
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.delivery.batch import message_deliver_batch
from shared.delivery.sweeper import outbox_sweep
from shared.delivery.types import OutcomeStatus
from shared.events.delivery import event_deliver
from shared.events.sweeper import event_sweep
from shared.metrics import Metrics
from shared.ratelimit import RateLimiter
from shared.services.bookings import booking_sync
from shared.services.outbox import DELIVER_MESSAGES, SYNC_BOOKING, publish
from shared.services.tokens import tokens_refresh_due

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


_worker = {"concurrency": 0}


@celeryd_after_setup.connect
def _worker_concurrency(sender: object = None, instance: Any = None, **kwargs: object) -> None:
    _worker["concurrency"] = int(getattr(instance, "concurrency", 0) or 0)


def send_threads() -> int:
    """This process's threads for provider calls: DELIVERY_SEND_THREADS, else the worker's
    --concurrency, so a batch task sends as many messages at once as the pool runs tasks."""
    size = (
        settings.DELIVERY_SEND_THREADS
        or _worker["concurrency"]
        or settings.CELERY_WORKER_CONCURRENCY
    )
    return max(1, size)


@lru_cache(maxsize=1)
def send_executor() -> ThreadPoolExecutor:
    """The thread pool of `send_threads()` threads that runs this process's provider calls."""
    return ThreadPoolExecutor(max_workers=send_threads(), thread_name_prefix="send")


@shared_task(name="workers.tasks.deliver_messages", ignore_result=True)
def deliver_messages(message_ids: list[int]) -> dict[str, int]:
    """Deliver a batch of outbound messages by id (delivery re-publishes those told to wait)."""
    try:
        outcomes = message_deliver_batch(
            message_ids=message_ids,
            limiter=limiter(),
            metrics=metrics(),
            executor=send_executor(),
        )
    except redis.RedisError as exc:
        # The limiter is unreachable: the rows stay queued and the sweeper re-enqueues them.
        logger.warning(
            "%d message(s) deferred: rate limiter unavailable (%s).",
            len(message_ids),
            type(exc).__name__,
        )
        return {OutcomeStatus.DEFERRED: len(message_ids)}
    return dict(Counter(outcome.status for outcome in outcomes.values()))


@shared_task(name="workers.tasks.sync_booking", ignore_result=True)
def sync_booking(booking_pk: int) -> str:
    """Sync one booking to Google Calendar by id (delivery re-publishes it if told to wait)."""
    return booking_sync(booking_pk=booking_pk).status


@shared_task(name="workers.tasks.deliver_event", ignore_result=True)
def deliver_event(delivery_id: int) -> str:
    """POST one signed event to its endpoint by delivery id (delivery re-publishes retries)."""
    return event_deliver(delivery_pk=delivery_id, metrics=metrics())


@shared_task(name="workers.tasks.fan_out", ignore_result=True)
def fan_out(task_name: str, ids: list[int]) -> int:
    """Publish `ids` to `task_name` in its own task sizes (the API hands many over at once)."""
    if task_name not in (DELIVER_MESSAGES, SYNC_BOOKING):
        raise ValueError(f"fan_out does not publish {task_name!r}")
    if not publish(task_name, ids, fan_out=False):
        raise RuntimeError(f"could not publish {len(ids)} {task_name} task(s)")
    return len(ids)


@shared_task(name="workers.tasks.sweep_outbox", ignore_result=True)
def sweep_outbox() -> dict[str, int]:
    """Beat: re-enqueue outbox rows the broker lost, unpublished rows and expired leases."""
    swept = {**outbox_sweep(), "events": len(event_sweep())}
    if any(swept.values()):
        logger.info(
            "Sweeper re-enqueued %(messages)d message(s), %(bookings)d booking(s) and "
            "%(events)d event delivery(ies); applied %(receipts)d receipt(s) that came before "
            "their send was recorded.",
            swept,
        )
    return swept


@shared_task(name="workers.tasks.refresh_tokens", ignore_result=True)
def refresh_tokens() -> dict[str, int]:
    """Beat: refresh the tokens that expire before the next run (one locked refresh each)."""
    counts = tokens_refresh_due()
    if any(counts.values()):
        logger.info(
            "Token refresh: %(google_calendar)d Google access token(s), %(instagram)d "
            "Instagram token(s) renewed, %(failed)d failed.",
            counts,
        )
    return counts


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
