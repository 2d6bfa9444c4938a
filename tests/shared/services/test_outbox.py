"""Publishing outbox ids: batches per task, and large publishes as one fan-out task."""

from __future__ import annotations

import pytest

from shared.services.outbox import DELIVER_MESSAGES, FAN_OUT, SYNC_BOOKING, publish
from workers.tasks import fan_out


def test_a_few_batches_are_published_directly(published, settings):
    settings.DELIVERY_BATCH_SIZE = 25
    ids = list(range(1, 61))

    assert publish(DELIVER_MESSAGES, ids)

    tasks = published()
    assert [name for name, _ in tasks] == [DELIVER_MESSAGES] * 3
    assert sorted(pk for _, (batch,) in tasks for pk in batch) == ids


def test_a_large_publish_is_one_fan_out_task_that_a_worker_splits_into_batches(published, settings):
    settings.DELIVERY_BATCH_SIZE = 25
    ids = list(range(1, 1001))

    assert publish(DELIVER_MESSAGES, ids)

    tasks = published()
    assert tasks == [(FAN_OUT, [DELIVER_MESSAGES, ids])]

    assert fan_out(DELIVER_MESSAGES, ids) == 1000  # what the worker runs

    batches = published()
    assert {name for name, _ in batches} == {DELIVER_MESSAGES}
    assert len(batches) == 40
    assert sorted(pk for _, (batch,) in batches for pk in batch) == ids


def test_bookings_fan_out_into_one_task_per_id(published):
    ids = list(range(1, 11))

    assert publish(SYNC_BOOKING, ids)
    ((name, args),) = published()
    assert (name, args) == (FAN_OUT, [SYNC_BOOKING, ids])

    fan_out(SYNC_BOOKING, ids)
    assert sorted(published()) == [(SYNC_BOOKING, [pk]) for pk in ids]


def test_fan_out_refuses_other_task_names(published):
    with pytest.raises(ValueError, match="does not publish"):
        fan_out("workers.tasks.sweep_outbox", [1])
    assert published() == []
