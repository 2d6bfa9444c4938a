"""One new message outside a transaction is one INSERT in autocommit, published once it is
committed; inside the caller's transaction it still waits for that commit; and a concurrent
request with the same idempotency key is still retried into the original."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

import shared.services.messages as services
import shared.services.outbox as outbox
from shared.models import Message, MessageStatus
from shared.services.messages import message_create_bulk, send_message
from shared.services.outbox import DELIVER_MESSAGES
from tests.factories import connect, make_member


@pytest.fixture
def org(transactional_db):
    return connect(make_member("acme", "alice", "admin"), "telegram").org


@pytest.fixture
def published(monkeypatch):
    """published() -> [(task name, ids, whether every row was committed)] since the last call.

    Records the outbox's publishes in this process (the shared test broker db sees other
    suites' workers and flushes); the broker path itself is tests/shared/services/test_outbox.
    """
    calls: list[tuple[str, list[int], bool]] = []

    def recording(task_name, ids, **kwargs):
        if not ids:
            return True  # as the real one: nothing to send
        committed = not connection.in_atomic_block and Message.objects.filter(
            pk__in=ids
        ).count() == len(ids)
        calls.append((task_name, list(ids), committed))
        return True

    monkeypatch.setattr(outbox, "publish", recording)

    def drain() -> list[tuple[str, list[int], bool]]:
        found = list(calls)
        calls.clear()
        return found

    return drain


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split()[0].upper() for q in captured.captured_queries]


def test_one_message_is_one_insert_without_begin_or_commit_and_is_published(org, published):
    with CaptureQueriesContext(connection) as captured:
        message = send_message(org, "telegram", "4242", "hi")

    writes = [s for s in statements(captured) if s != "SELECT"]
    assert writes == ["INSERT"]
    assert published() == [(DELIVER_MESSAGES, [message.pk], True)]
    stored = Message.objects.get(pk=message.pk)
    assert stored.status == MessageStatus.QUEUED and stored.enqueued_at is not None


def test_inside_the_callers_transaction_it_is_published_on_commit_only(org, published):
    with transaction.atomic():
        message = send_message(org, "telegram", "4242", "hi")
        assert published() == []
    assert published() == [(DELIVER_MESSAGES, [message.pk], True)]

    with pytest.raises(RuntimeError), transaction.atomic():
        send_message(org, "telegram", "4243", "rolled back")
        raise RuntimeError
    assert published() == []
    assert list(Message.objects.values_list("to", flat=True)) == ["4242"]


def test_a_failed_publish_leaves_the_row_for_the_sweeper(org, monkeypatch):
    monkeypatch.setattr(outbox, "publish", lambda *args, **kwargs: False)  # the broker is down

    message = send_message(org, "telegram", "4242", "hi")

    assert Message.objects.get(pk=message.pk).enqueued_at is None


def test_a_concurrent_insert_of_the_same_key_returns_the_original(org, published, monkeypatch):
    real = services._active_integrations
    raced: list[Message] = []
    calls = []

    def racing(organization, providers):
        found = real(organization, providers)
        calls.append(providers)
        if len(calls) == 1:  # another request commits the same key between check and insert
            raced.append(send_message(org, "telegram", "4242", "hi", idempotency_key="k-1"))
        return found

    monkeypatch.setattr(services, "_active_integrations", racing)

    message = send_message(org, "telegram", "4242", "hi", idempotency_key="k-1")

    assert message.pk == raced[0].pk
    assert Message.objects.count() == 1
    assert published() == [(DELIVER_MESSAGES, [raced[0].pk], True)]  # the other request's only
    assert calls[-1] == set()  # the retry found the original: nothing new to connect


def test_bulk_still_writes_in_one_transaction(org, published):
    results = message_create_bulk(
        organization=org,
        data={"messages": [{"provider": "telegram", "to": str(n), "body": "x"} for n in (1, 2)]},
    )

    assert [created for _, created in results] == [True, True]
    assert published() == [(DELIVER_MESSAGES, [m.pk for m, _ in results], True)]
