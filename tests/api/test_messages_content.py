"""api.messages: what a message carries beyond text (templates, media, attachments, parse_mode,
tag) through the API: stored, shown without attachment contents, and part of idempotency."""

from __future__ import annotations

import base64
import json

import pytest

from shared.crypto import decrypt_data
from shared.models import Message
from shared.providers.registry import MESSAGING_SLUGS
from shared.services.messages import send_message
from tests.api.test_messages import VALID, post
from tests.factories import assert_error_envelope, connect, ok_body

pytestmark = pytest.mark.django_db

SID = "HX" + "0123456789abcdef" * 2
WA_TEMPLATE = {
    "provider": "whatsapp",
    "to": "+14155550123",
    "template": {"content_sid": SID, "variables": {"1": "Ana", "2": "10:30"}},
}
SG_TEMPLATE = {
    "provider": "sendgrid",
    "to": "carol@example.test",
    "template": {"id": "d-" + "ab" * 16, "data": {"name": "Ana"}},
}
# A recognisable attachment: its base64 (and its text) must appear nowhere but encrypted.
ATTACHMENT_TEXT = b"CANARY-attachment-body-7f3a9c receipt"
ATTACHMENT_B64 = base64.b64encode(ATTACHMENT_TEXT).decode()
ATTACHMENT = {"filename": "receipt.txt", "content": ATTACHMENT_B64}


@pytest.fixture
def acme(cast):
    connect(cast["admin"], *MESSAGING_SLUGS)
    return cast


def test_a_whatsapp_template_is_queued_and_shown(acme, client_for):
    body = ok_body(post(client_for(acme["admin"]), WA_TEMPLATE), 202)

    shown = body["data"]
    assert shown["template"] == WA_TEMPLATE["template"]
    assert (shown["body"], shown["media_urls"], shown["attachments"]) == ("", [], [])
    assert (shown["parse_mode"], shown["tag"]) == (None, None)
    assert Message.objects.get().content == {"template": WA_TEMPLATE["template"]}


def test_a_plain_message_stores_no_content(acme, client_for):
    ok_body(post(client_for(acme["admin"]), VALID["telegram"]), 202)

    assert Message.objects.get().content is None


def test_media_parse_mode_and_tag_are_stored_and_shown(acme, client_for):
    client = client_for(acme["admin"])
    photo = {**VALID["telegram"], "parse_mode": "HTML"}
    photo["media_urls"] = ["https://cdn.example.com/t/1.jpg"]
    shown = ok_body(post(client, photo), 202)["data"]
    tagged = ok_body(post(client, {**VALID["instagram"], "tag": "HUMAN_AGENT"}), 202)["data"]

    assert (shown["media_urls"], shown["parse_mode"]) == (photo["media_urls"], "HTML")
    assert tagged["tag"] == "HUMAN_AGENT"


def test_attachments_are_encrypted_at_rest_and_never_shown(acme, client_for):
    client = client_for(acme["admin"])
    payload = {**SG_TEMPLATE, "attachments": [ATTACHMENT]}
    created = ok_body(post(client, payload), 202)

    message = Message.objects.get()
    assert created["data"]["attachments"] == [
        {
            "filename": "receipt.txt",
            "type": "text/plain",
            "disposition": "attachment",
            "content_id": "",
            "size": len(ATTACHMENT_TEXT),
        }
    ]
    assert json.loads(decrypt_data(message.attachments_encrypted)) == [ATTACHMENT_B64]
    stored = json.dumps(message.content) + message.attachments_encrypted
    listed = client.get("/api/messages/").content.decode()
    detail = client.get(f"/api/messages/{message.pk}/").content.decode()
    for text in (stored, listed, detail, json.dumps(created)):
        assert ATTACHMENT_B64 not in text
        assert "CANARY-attachment" not in text


def test_a_bad_template_is_a_400_naming_the_field(acme, client_for):
    bad = {**WA_TEMPLATE, "template": {"content_sid": "HX-not-a-sid"}}
    body = assert_error_envelope(post(client_for(acme["admin"]), bad), 400)

    assert body["code"] == "validation_failed"
    assert list(body["errors"]) == ["template.content_sid"]
    assert not Message.objects.exists()


def test_a_bad_attachment_is_a_400_that_does_not_echo_it(acme, client_for):
    bad = {**SG_TEMPLATE, "attachments": [{**ATTACHMENT, "content": ATTACHMENT_B64 + "!"}]}
    response = post(client_for(acme["admin"]), bad)
    body = assert_error_envelope(response, 400)

    assert list(body["errors"]) == ["attachments.0.content"]
    assert ATTACHMENT_B64 not in response.content.decode()


@pytest.mark.parametrize(
    ("payload", "change", "field"),
    [
        (WA_TEMPLATE, {"template": {"content_sid": SID, "variables": {"1": "Bo"}}}, "template"),
        (SG_TEMPLATE, {"template": {"id": "d-" + "cd" * 16}}, "template"),
        (
            {**VALID["telegram"], "media_urls": ["https://cdn.example.com/a.jpg"]},
            {"media_urls": ["https://cdn.example.com/b.jpg"]},
            "media_urls",
        ),
        (VALID["telegram"], {"parse_mode": "HTML"}, "parse_mode"),
        (VALID["instagram"], {"tag": "HUMAN_AGENT"}, "tag"),
        (
            {**SG_TEMPLATE, "attachments": [ATTACHMENT]},
            {"attachments": [{**ATTACHMENT, "content": base64.b64encode(b"other").decode()}]},
            "attachments",
        ),
        (
            {**SG_TEMPLATE, "attachments": [ATTACHMENT]},
            {"attachments": [{**ATTACHMENT, "filename": "other.txt"}]},
            "attachments",
        ),
    ],
    ids=["variables", "template-id", "media", "parse-mode", "tag", "content", "filename"],
)
def test_the_same_key_with_other_content_is_409(acme, client_for, payload, change, field):
    client = client_for(acme["admin"])
    keyed = {**payload, "idempotency_key": "k-1"}
    ok_body(post(client, keyed), 202)

    body = assert_error_envelope(post(client, {**keyed, **change}), 409)

    assert body["code"] == "idempotency_key_reused"
    assert field in body["errors"]["idempotency_key"][0]
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    "payload",
    [WA_TEMPLATE, {**SG_TEMPLATE, "attachments": [ATTACHMENT]}],
    ids=["template", "attachments"],
)
def test_the_same_key_with_the_same_content_is_200_and_the_original(acme, client_for, payload):
    client = client_for(acme["admin"])
    keyed = {**payload, "idempotency_key": "k-2"}
    first = ok_body(post(client, keyed), 202)

    again = ok_body(post(client, keyed), 200)

    assert again["message_id"] == first["message_id"]


def test_send_message_takes_the_same_parameters(acme):
    org = acme["admin"].org
    message = send_message(
        org,
        "sendgrid",
        "carol@example.test",
        template=SG_TEMPLATE["template"],
        attachments=[ATTACHMENT],
        subject="Your receipt",
    )
    photo = send_message(
        org,
        "telegram",
        "123456789",
        "<b>Ticket</b>",
        media_urls=["https://cdn.example.com/t.pdf"],
        parse_mode="HTML",
    )

    assert message.template == SG_TEMPLATE["template"]
    assert message.attachments[0]["size"] == len(ATTACHMENT_TEXT)
    assert (photo.media_urls, photo.parse_mode) == (["https://cdn.example.com/t.pdf"], "HTML")
