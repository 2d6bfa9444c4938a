"""api.serializers.message_data: the response body of a send, equal to MessageSerializer (the
documented shape) field by field for every kind of message."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from api.serializers import MessageSerializer, message_data
from shared.models import Message, MessageStatus
from shared.providers.registry import MESSAGING_SLUGS
from shared.services.messages import send_message
from tests.factories import connect

pytestmark = pytest.mark.django_db

SID = "HX" + "0123456789abcdef" * 2
PDF = base64.b64encode(b"%PDF-1.4 receipt").decode()


@pytest.fixture
def messages(cast) -> list[Message]:
    """One message of every shape: plain, templated, media, tagged, attachments, scheduled, with
    and without a key, then sent, failed and errored states."""
    org = connect(cast["admin"], *MESSAGING_SLUGS).org
    later = timezone.now() + timedelta(days=2)
    made = [
        send_message(org, "telegram", "4242", "plain"),
        send_message(org, "telegram", "4243", "ü ✓ *bold*", parse_mode="MarkdownV2"),
        send_message(
            org,
            "telegram",
            "4244",
            "caption",
            media_urls=["https://cdn.example.test/a.jpg"],
            idempotency_key="media-1",
        ),
        send_message(
            org,
            "whatsapp",
            "+14155550123",
            template={"content_sid": SID, "variables": {"1": "Ana", "2": "10:30"}},
            send_at=later,
        ),
        send_message(
            org,
            "whatsapp",
            "+14155550124",
            "photo",
            media_urls=["https://cdn.example.test/b.png"],
        ),
        send_message(org, "instagram", "17841400000000001", "hi", tag="HUMAN_AGENT"),
        send_message(
            org,
            "sendgrid",
            "carol@example.test",
            "See attached",
            subject="Receipt",
            html="<p>See attached</p><img src='cid:logo'>",
            attachments=[
                {"filename": "receipt.pdf", "content": PDF},
                {
                    "filename": "logo.png",
                    "content": PDF,
                    "type": "image/png",
                    "disposition": "inline",
                    "content_id": "logo",
                },
            ],
            transactional=True,
            ignore_suppression=True,
            idempotency_key="receipt-42",
        ),
        send_message(
            org,
            "sendgrid",
            "dave@example.test",
            template={"id": "d-" + "ab" * 16, "data": {"name": "Ana", "n": [1, {"x": None}]}},
        ),
    ]
    sent, failed, errored = made[0], made[2], made[5]
    now = timezone.now()
    Message.objects.filter(pk=sent.pk).update(
        status=MessageStatus.SENT, attempts=1, provider_message_id="tg-77", sent_at=now
    )
    Message.objects.filter(pk=failed.pk).update(
        status=MessageStatus.FAILED,
        attempts=3,
        last_error="Bad Request: chat not found",
        error_kind="rejected",
        error_code="400",
        failed_at=now,
        next_attempt_at=None,
    )
    Message.objects.filter(pk=errored.pk).update(
        status=MessageStatus.QUEUED, attempts=2, last_error="timeout", error_kind="transient"
    )
    fresh = list(made)  # as the send returned them (not re-read) ...
    reread = list(Message.objects.filter(pk__in=[m.pk for m in made]).order_by("pk"))
    return fresh + reread  # ... and as they are stored


def test_message_data_equals_the_serializer_for_every_kind_of_message(messages):
    kinds = {(m.provider, bool(m.content), m.status) for m in messages}
    assert len(kinds) >= 8  # the fixture covers what it says
    for message in messages:
        expected = MessageSerializer(message).data
        got = message_data(message)
        assert list(got) == list(expected) == MessageSerializer.Meta.fields
        for name in MessageSerializer.Meta.fields:
            assert got[name] == expected[name], (message.pk, name)
            assert type(got[name]) is type(expected[name]) or (
                isinstance(got[name], str) and isinstance(expected[name], str)
            ), (message.pk, name)
        assert JSONRenderer().render(got) == JSONRenderer().render(expected)


def test_message_data_shows_attachment_descriptions_never_contents(messages):
    with_files = next(m for m in messages if m.attachments)
    data = message_data(with_files)

    assert [a["filename"] for a in data["attachments"]] == ["receipt.pdf", "logo.png"]
    assert data["attachments"][1]["disposition"] == "inline"
    assert PDF not in JSONRenderer().render(data).decode()
