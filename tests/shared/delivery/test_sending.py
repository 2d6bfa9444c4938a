"""send_all: a call starts only once its start is recorded, and never on a slot gone stale."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial

import pytest
from django.utils import timezone

from shared.delivery.claims import claim, mark_started
from shared.delivery.recording import release_unsent
from shared.delivery.sending import send_all
from shared.delivery.types import Release
from shared.models import Message, MessageStatus
from tests.shared.delivery.helpers import BOT, queued, sends

pytestmark = pytest.mark.django_db


def test_a_slot_that_goes_stale_while_the_start_is_recorded_is_not_used_and_not_counted(
    org, tools, sandbox_client
):
    message = queued(org)
    lease = timezone.now() + timedelta(seconds=60)
    assert claim([message], timezone.now(), lease) == {message.pk}
    message.refresh_from_db()
    slot_by = time.monotonic() + 0.2
    slot = timezone.now() + timedelta(seconds=0.1)  # slot_by is its slot + SLOT_TOLERANCE

    def slow_mark(ids):
        started = mark_started(ids, lease=lease)
        while time.monotonic() <= slot_by:  # recording outlasts the slot's tolerance
            pass
        return started

    (sent,) = send_all(
        [message], {message.integration_id: BOT}, None, {message.pk: (1e18, slot_by)}, slow_mark
    )
    release_unsent([sent], tools[1])

    message.refresh_from_db()
    assert sent.released is Release.SLOT and sent.counted
    assert message.status == MessageStatus.QUEUED
    assert message.attempts == 0 and message.send_started_at is None
    assert sends(sandbox_client) == []
    # The slot it held stays on the row, so its next run gives it back to the limiter.
    assert abs((message.rate_slot_at - slot).total_seconds()) < 0.02


def test_a_call_whose_start_was_recorded_in_time_goes_out_and_counts_once(
    org, tools, sandbox_client
):
    message = queued(org)
    lease = timezone.now() + timedelta(seconds=60)
    claim([message], timezone.now(), lease)
    message.refresh_from_db()

    (sent,) = send_all(
        [message],
        {message.integration_id: BOT},
        None,
        {message.pk: (1e18, time.monotonic() + 60)},
        partial(mark_started, lease=lease),
    )

    assert sent.released is None and sent.error is None and sent.provider_id
    assert Message.objects.get(pk=message.pk).attempts == 1
    assert len(sends(sandbox_client)) == 1
