"""shared.delivery.stats: the outbox gauges count by status and measure lateness from the due
time, so a message scheduled long ago is not reported late the moment it falls due."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.delivery.stats import outbox_stats
from shared.models import Message, MessageStatus
from tests.shared.delivery.helpers import queued

pytestmark = pytest.mark.django_db


def test_counts_by_status_and_no_lateness_when_nothing_is_overdue(org):
    now = timezone.now()
    queued(org, status=MessageStatus.SCHEDULED, next_attempt_at=now + timedelta(days=3))
    queued(org, next_attempt_at=now + timedelta(seconds=30))  # a retry waiting its backoff
    queued(org, status=MessageStatus.SENDING)

    stats = outbox_stats()

    assert (stats["scheduled"], stats["queued"], stats["sending"]) == (1, 1, 1)
    assert stats["oldest_age"] < 5


def test_lateness_is_counted_from_the_due_time_not_from_creation(org):
    now = timezone.now()
    month_old = queued(org, next_attempt_at=now - timedelta(seconds=20))
    Message.objects.filter(pk=month_old.pk).update(created_at=now - timedelta(days=30))
    overdue = queued(
        org, status=MessageStatus.SCHEDULED, next_attempt_at=now - timedelta(seconds=90)
    )

    assert 90 <= outbox_stats()["oldest_age"] < 100
    Message.objects.filter(pk=overdue.pk).update(status=MessageStatus.CANCELLED)
    assert 20 <= outbox_stats()["oldest_age"] < 30
