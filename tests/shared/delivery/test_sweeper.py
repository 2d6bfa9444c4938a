"""message_sweep in-process: interrupted sends re-queued, poison messages failed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.delivery.sweeper import message_sweep
from shared.models import MessageAttempt, MessageStatus
from tests.shared.delivery.helpers import queued

pytestmark = pytest.mark.django_db


def test_the_sweeper_requeues_an_interrupted_send_and_fails_a_poison_message(org, settings):
    settings.DELIVERY_MAX_INTERRUPTIONS = 3
    expired = timezone.now() - timedelta(seconds=5)
    once = queued(org, status=MessageStatus.SENDING, attempts=1, lease_expires_at=expired)
    poison = queued(
        org, to="4243", status=MessageStatus.SENDING, attempts=4, lease_expires_at=expired
    )
    MessageAttempt.objects.create(message=poison, number=1, started_at=expired, outcome="retry")

    swept = message_sweep()

    once.refresh_from_db()
    poison.refresh_from_db()
    assert swept == [once.pk]
    assert once.status == MessageStatus.QUEUED and once.lease_expires_at is None
    assert poison.status == MessageStatus.FAILED and poison.error_code == "interrupted"
    assert org.audit_events.filter(action="message.failed").count() == 1
