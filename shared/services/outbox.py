"""Publishing outbox rows to Celery by task name (ids only), and unpublishing them when that fails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from shared.models import Booking, BookingStatus, Message, MessageStatus

logger = logging.getLogger(__name__)

DELIVER_MESSAGES = "workers.tasks.deliver_messages"
SYNC_BOOKING = "workers.tasks.sync_booking"
FAN_OUT = "workers.tasks.fan_out"
# More tasks than this in one publish travel as fan-out tasks of up to FAN_OUT_CHUNK ids, which
# a worker splits: a 1,000-message bulk request then costs the API one publish, not 40.
FAN_OUT_ABOVE = 4
FAN_OUT_CHUNK = 1000
# Tasks whose one argument is a list of ids, delivered together (DELIVERY_BATCH_SIZE at most).
BATCHED = frozenset({DELIVER_MESSAGES})


def publish(
    task_name: str,
    ids: Sequence[int],
    *,
    countdown: float | None = None,
    fan_out: bool = True,
) -> bool:
    """Publish `ids` to `task_name` over one producer: batches of ids for a batched task, one
    task per id otherwise; many tasks' worth travels as fan-out tasks (unless `fan_out` is
    False, as in the fan-out task itself). False if the broker failed.

    A failure is logged, not raised: the rows stay in the outbox and the sweeper publishes them.
    """
    if not ids:
        return True
    ids = [int(pk) for pk in ids]
    calls = _calls(task_name, ids, {"countdown": countdown} if countdown else {})
    if fan_out and not countdown and len(calls) > FAN_OUT_ABOVE:
        chunks = range(0, len(ids), FAN_OUT_CHUNK)
        calls = [([task_name, ids[i : i + FAN_OUT_CHUNK]], {}) for i in chunks]
        return _send(FAN_OUT, calls, len(ids))
    return _send(task_name, calls, len(ids))


def publish_later(task_name: str, due: Mapping[int, datetime]) -> bool:
    """Publish ids each due at its own time (an ETA); for a batched task, ids due at the same
    time travel together. False on failure."""
    groups: dict[datetime, list[int]] = {}
    for pk, at in due.items():
        groups.setdefault(at, []).append(pk)
    calls = [call for at, ids in groups.items() for call in _calls(task_name, ids, {"eta": at})]
    return _send(task_name, calls, len(due))


def _calls(
    task_name: str, ids: list[int], options: dict[str, Any]
) -> list[tuple[list, dict[str, Any]]]:
    """(args, options) per task: batches of DELIVERY_BATCH_SIZE ids for a batched task."""
    if task_name in BATCHED:
        size = max(1, settings.DELIVERY_BATCH_SIZE)
        return [([ids[i : i + size]], options) for i in range(0, len(ids), size)]
    return [([pk], options) for pk in ids]


def _send(task_name: str, calls: list[tuple[list, dict[str, Any]]], count: int) -> bool:
    if not calls:
        return True
    from corbi.celery import app

    try:
        with app.producer_or_acquire() as producer:
            for args, options in calls:
                app.send_task(task_name, args=args, producer=producer, **options)
    except Exception as exc:  # kombu/redis raise many types; the outbox makes this safe
        logger.warning(
            "Could not publish %d %s task(s) (%s); the sweeper will retry.",
            count,
            task_name,
            type(exc).__name__,
        )
        return False
    return True


def publish_on_commit(
    task_name: str,
    ids: Sequence[int],
    *,
    on_failure: Callable[[list[int]], None] | None = None,
) -> None:
    """Publish after the surrounding transaction commits; call `on_failure(ids)` if it fails."""
    ids = list(ids)

    def _go() -> None:
        if not publish(task_name, ids) and on_failure is not None:
            on_failure(ids)

    transaction.on_commit(_go)


def publish_later_on_commit(
    task_name: str,
    due: Mapping[int, datetime],
    *,
    on_failure: Callable[[list[int]], None] | None = None,
) -> None:
    """`publish_later` after the surrounding transaction commits; `on_failure(ids)` if it fails."""
    due = dict(due)

    def _go() -> None:
        if due and not publish_later(task_name, due) and on_failure is not None:
            on_failure(list(due))

    transaction.on_commit(_go)


def message_unpublish(ids: Sequence[int]) -> None:
    """The publish failed: mark the rows so the sweeper publishes them on its next run (a
    scheduled row once it is due)."""
    Message.objects.filter(
        pk__in=ids, status__in=[MessageStatus.QUEUED, MessageStatus.SCHEDULED]
    ).update(enqueued_at=None)


def booking_unpublish(ids: Sequence[int]) -> None:
    """The publish failed: mark the bookings so the sweeper publishes them on its next run."""
    Booking.objects.filter(pk__in=ids, status=BookingStatus.PENDING).update(enqueued_at=None)
