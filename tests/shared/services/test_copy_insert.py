"""shared.services.copy_insert: COPY writes the same rows (and ids) bulk_create would."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from shared.models import Message, MessageStatus
from shared.services.copy_insert import copy_insert
from tests.factories import connect, make_member

pytestmark = pytest.mark.django_db


def rows(org, key_prefix: str) -> list[Message]:
    integration = org.integrations.get(provider="whatsapp")
    now = timezone.now()
    return [
        Message(
            organization=org,
            integration=integration,
            provider="whatsapp",
            to=f"+1415555010{i}",
            body='quote " backslash \\ tab \t newline \n comma , brace {',
            idempotency_key=f"{key_prefix}-{i}",
            status=MessageStatus.SCHEDULED,
            next_attempt_at=now + timedelta(hours=i),
            send_at=now + timedelta(hours=i),
            transactional=bool(i % 2),
            content={"template": {"content_sid": "HX" + "0" * 32, "variables": {"1": "Añá"}}}
            if i
            else None,
            attachments_encrypted="gAAAA" * i,
        )
        for i in range(3)
    ]


def test_copy_writes_what_bulk_create_writes():
    org = connect(make_member("acme", "alice", "admin"), "whatsapp").org
    copied = copy_insert(Message, rows(org, "copy"))
    created = Message.objects.bulk_create(rows(org, "bulk"))

    assert all(m.pk and not m._state.adding for m in copied)
    assert len({m.pk for m in copied + created}) == 6
    ignore = {"id", "idempotency_key", "next_attempt_at", "send_at"}
    for a, b in zip(copied, created, strict=True):
        stored_a = model_to_dict(Message.objects.get(pk=a.pk))
        stored_b = model_to_dict(Message.objects.get(pk=b.pk))
        assert {k: v for k, v in stored_a.items() if k not in ignore} == {
            k: v for k, v in stored_b.items() if k not in ignore
        }
        stored = Message.objects.get(pk=a.pk)
        assert (stored.created_at, stored.next_attempt_at) == (a.created_at, a.next_attempt_at)


def test_a_duplicate_idempotency_key_is_an_integrity_error_and_writes_nothing():
    org = connect(make_member("acme", "alice", "admin"), "whatsapp").org
    copy_insert(Message, rows(org, "dup")[:1] + rows(org, "other")[1:2])
    before = Message.objects.count()

    with pytest.raises(IntegrityError), transaction.atomic():
        copy_insert(Message, rows(org, "dup"))

    assert Message.objects.count() == before
