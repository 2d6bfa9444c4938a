"""shared.services.messages from product code: strict recipients and idempotency keys."""

from __future__ import annotations

import pytest

from shared.errors import IdempotencyKeyReused, ValidationFailed
from shared.models import Message
from shared.services.messages import message_create_bulk, send_message
from shared.services.outbox import DELIVER_MESSAGES
from tests.factories import connect

pytestmark = pytest.mark.django_db


@pytest.fixture
def org(cast):
    connect(cast["admin"], "telegram", "whatsapp", "sendgrid")
    return cast["admin"].org


def test_send_message_stores_the_normalized_recipient(org):
    message = send_message(org, "whatsapp", "whatsapp:+1 415 555 0123", "hi")

    assert message.to == "+14155550123"
    assert send_message(org, "sendgrid", "Ana@Example.TEST", "x", subject="s").to == (
        "Ana@example.test"
    )


def test_send_message_refuses_an_invalid_number_naming_to(org):
    with pytest.raises(ValidationFailed) as caught:
        send_message(org, "whatsapp", "+15551234567", "hi")

    assert list(caught.value.errors) == ["to"]
    assert not Message.objects.exists()


def test_send_message_with_a_known_key_and_the_same_request_returns_the_original(
    org, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = send_message(org, "telegram", "4242", "Ready", idempotency_key="k")
    assert [name for name, _ in published()] == [DELIVER_MESSAGES]

    with django_capture_on_commit_callbacks(execute=True):
        again = send_message(org, "telegram", " 4242 ", "Ready", idempotency_key="k")

    assert again.pk == first.pk
    assert published() == []


def test_send_message_with_a_known_key_and_another_request_raises_and_sends_nothing(
    org, published, django_capture_on_commit_callbacks
):
    first = send_message(org, "telegram", "4242", "Ready", idempotency_key="k")

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(IdempotencyKeyReused) as caught,
    ):
        send_message(org, "telegram", "4243", "Ready", idempotency_key="k")

    assert caught.value.code == "idempotency_key_reused"
    assert caught.value.errors == {
        "idempotency_key": [
            f"Already used for message {first.pk} with a different to; "
            "send a new key for a new message."
        ]
    }
    assert list(Message.objects.values_list("to", flat=True)) == ["4242"]
    assert published() == []


def test_a_bulk_with_one_reused_key_writes_and_publishes_nothing(
    org, published, django_capture_on_commit_callbacks
):
    send_message(org, "telegram", "4242", "Ready", idempotency_key="k")
    items = [
        {"provider": "telegram", "to": "1", "body": "new"},
        {"provider": "telegram", "to": "4242", "body": "Ready", "idempotency_key": "k"},
        {"provider": "telegram", "to": "4242", "body": "Ready!", "idempotency_key": "k2"},
        {"provider": "telegram", "to": "4242", "body": "Other", "idempotency_key": "k3"},
    ]
    send_message(org, "telegram", "4242", "Ready", idempotency_key="k3")

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(IdempotencyKeyReused) as caught,
    ):
        message_create_bulk(organization=org, data={"messages": items})

    assert list(caught.value.errors) == ["messages.3.idempotency_key"]
    assert caught.value.message.startswith("messages.3.idempotency_key: Already used")
    assert Message.objects.count() == 2
    assert published() == []


def test_keys_are_per_organization(cast, org):
    connect(cast["outsider"], "telegram")
    ours = send_message(org, "telegram", "4242", "Ready", idempotency_key="k")

    theirs = send_message(cast["outsider"].org, "telegram", "999", "Other", idempotency_key="k")

    assert theirs.pk != ours.pk
