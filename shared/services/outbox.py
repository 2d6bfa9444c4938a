"""Publishing outbox rows to Celery by task name (ids only); the sweeper finds what was lost."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import transaction

logger = logging.getLogger(__name__)

DELIVER_MESSAGE = "workers.tasks.deliver_message"
SYNC_BOOKING = "workers.tasks.sync_booking"
FAN_OUT = "workers.tasks.fan_out"
FAN_OUT_CHUNK = 500


def publish(task_name: str, ids: Sequence[int], *, countdown: float | None = None) -> bool:
    """Publish one task per id; many ids travel as a few fan-out tasks. False if the broker failed.

    A failure is logged, not raised: the rows stay in the outbox and the sweeper publishes them.
    """
    if not ids:
        return True
    from corbi.celery import app

    try:
        with app.producer_or_acquire() as producer:
            if len(ids) == 1 or countdown:
                for pk in ids:
                    app.send_task(task_name, args=[pk], countdown=countdown, producer=producer)
            else:
                for start in range(0, len(ids), FAN_OUT_CHUNK):
                    chunk = list(ids[start : start + FAN_OUT_CHUNK])
                    app.send_task(FAN_OUT, args=[task_name, chunk], producer=producer)
    except Exception as exc:  # kombu/redis raise many types; the outbox makes this safe
        logger.warning(
            "Could not publish %d %s task(s) (%s); the sweeper will retry.",
            len(ids),
            task_name,
            type(exc).__name__,
        )
        return False
    return True


def publish_on_commit(task_name: str, ids: Sequence[int], *, on_failure=None) -> None:
    """Publish after the surrounding transaction commits; call `on_failure(ids)` if it fails."""
    ids = list(ids)

    def _go() -> None:
        if not publish(task_name, ids) and on_failure is not None:
            on_failure(ids)

    transaction.on_commit(_go)
