"""Templates, media, attachments and tags through a real worker, the sandbox and its callbacks:
WhatsApp's 24-hour window (free text fails 63016 by callback, a template is delivered)."""

from __future__ import annotations

import base64
import json

import pytest

from shared.models import Message, MessageStatus
from shared.services.integrations import integration_connect
from shared.services.messages import send_message
from tests.factories import CANARY, SANDBOX_ACCOUNTS, VALID_EXTRA, assert_no_canary, make_member
from tests.workers.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

S = MessageStatus
SID = "HX" + "5e" * 16
OTHER_SID = "HX" + "7a" * 16  # well-formed, never registered
ACCOUNT = VALID_EXTRA["whatsapp"]["account_sid"]
ATTACHMENT_TEXT = b"CANARY-e2e-attachment-6b1d receipt"
ATTACHMENT_B64 = base64.b64encode(ATTACHMENT_TEXT).decode()


@pytest.fixture
def org(stack, sandbox_client, live_server, settings):
    """acme with the four messaging providers; WhatsApp with Twilio's 24-hour window on."""
    settings.PUBLIC_BASE_URL = stack.env["PUBLIC_BASE_URL"] = live_server.url
    org = make_member("acme", "alice", "admin").org
    accounts = {**SANDBOX_ACCOUNTS, "whatsapp": dict(SANDBOX_ACCOUNTS["whatsapp"])}
    del accounts["whatsapp"]["session_window_hours"]  # the default: Twilio's 24 hours
    for provider in ("whatsapp", "sendgrid", "telegram", "instagram"):
        sandbox_client.add_account(provider, **accounts[provider])
        integration_connect(
            organization=org,
            provider=provider,
            token=CANARY[provider],
            extra=VALID_EXTRA[provider],
        )
    sandbox_client.add_whatsapp_template(
        ACCOUNT, SID, "Hi {{1}}, your table is at {{2}}.", {"1": "there", "2": "8 pm"}
    )
    return org


def settle(*messages: Message, final: dict[int, str]) -> None:
    def done() -> bool:
        statuses = dict(Message.objects.filter(pk__in=final).values_list("pk", "status"))
        return statuses == final

    wait_for(done, 90, f"messages at {final}")
    for message in messages:
        message.refresh_from_db()


def whatsapp_sends(sandbox_client) -> dict[str, dict]:
    return {
        r["body"]["To"]: r["body"]
        for r in sandbox_client.requests("whatsapp")
        if r["path"].endswith("/Messages.json")
    }


def test_outside_the_window_free_text_fails_63016_and_a_template_is_delivered(
    stack, sandbox_client, org
):
    stack.start_worker()
    template = {"content_sid": SID, "variables": {"1": "Ana", "2": "10:30"}}
    free = send_message(org, "whatsapp", "+14155550101", "Your table is ready")
    templated = send_message(org, "whatsapp", "+14155550102", template=template)
    sandbox_client.whatsapp_inbound(ACCOUNT, "whatsapp:+14155550103")  # the customer wrote
    in_session = send_message(org, "whatsapp", "+14155550103", "Your table is ready")

    settle(
        free,
        templated,
        in_session,
        final={free.pk: S.UNDELIVERED, templated.pk: S.DELIVERED, in_session.pk: S.DELIVERED},
    )

    assert free.error_code == "63016"
    assert list(free.events.values_list("provider_status", "error_code")) == [("failed", "63016")]
    sent = whatsapp_sends(sandbox_client)
    assert sent["whatsapp:+14155550102"]["ContentSid"] == SID
    assert json.loads(sent["whatsapp:+14155550102"]["ContentVariables"]) == template["variables"]
    assert "Body" not in sent["whatsapp:+14155550102"]
    assert sent["whatsapp:+14155550101"]["Body"] == "Your table is ready"


def test_templates_twilio_refuses_fail_with_twilios_code(stack, sandbox_client, org):
    stack.start_worker()
    unknown = send_message(org, "whatsapp", "+14155550104", template={"content_sid": OTHER_SID})
    extra_variable = send_message(
        org,
        "whatsapp",
        "+14155550105",
        template={"content_sid": SID, "variables": {"1": "Ana", "9": "x"}},
    )
    defaulted = send_message(
        org, "whatsapp", "+14155550106", template={"content_sid": SID, "variables": {"1": "Bo"}}
    )

    settle(
        unknown,
        extra_variable,
        defaulted,
        final={unknown.pk: S.FAILED, extra_variable.pk: S.UNDELIVERED, defaulted.pk: S.DELIVERED},
    )

    assert (unknown.error_code, unknown.error_kind) == ("21655", "permanent")
    assert extra_variable.error_code == "63028"


def test_whatsapp_media_is_sent_as_media_url(stack, sandbox_client, org):
    stack.start_worker()
    sandbox_client.whatsapp_inbound(ACCOUNT, "whatsapp:+14155550107")
    media = send_message(
        org,
        "whatsapp",
        "+14155550107",
        "Your ticket",
        media_urls=["https://cdn.example.com/tickets/1.jpg"],
    )

    settle(media, final={media.pk: S.DELIVERED})

    sent = whatsapp_sends(sandbox_client)["whatsapp:+14155550107"]
    assert sent["MediaUrl"] in (
        "https://cdn.example.com/tickets/1.jpg",
        ["https://cdn.example.com/tickets/1.jpg"],
    )
    assert sent["Body"] == "Your ticket"


def test_a_sendgrid_template_with_an_attachment(stack, sandbox_client, org):
    stack.start_worker()
    mail = send_message(
        org,
        "sendgrid",
        "ana@example.test",
        template={"id": "d-" + "ab" * 16, "data": {"name": "Ana"}},
        subject="Your receipt",
        attachments=[{"filename": "receipt.txt", "content": ATTACHMENT_B64}],
    )

    settle(mail, final={mail.pk: S.SENT})

    body = sandbox_client.requests("sendgrid")[-1]["body"]
    assert body["template_id"] == "d-" + "ab" * 16
    assert body["personalizations"][0]["dynamic_template_data"] == {
        "name": "Ana",
        "subject": "Your receipt",
    }
    assert "content" not in body
    assert body["attachments"] == [
        {
            "content": ATTACHMENT_B64,
            "filename": "receipt.txt",
            "type": "text/plain",
            "disposition": "attachment",
        }
    ]
    logs = stack.log_text()
    assert ATTACHMENT_B64 not in logs and "CANARY-e2e-attachment" not in logs
    assert_no_canary(logs)


def test_telegram_media_by_url_with_a_formatted_caption(stack, sandbox_client, org):
    stack.start_worker()
    photo = send_message(
        org,
        "telegram",
        "4242",
        "*Ticket* 12\\.03",
        parse_mode="MarkdownV2",
        media_urls=["https://cdn.example.com/t/1.jpg"],
    )
    document = send_message(
        org, "telegram", "4243", media_urls=["https://cdn.example.com/t/invoice.pdf"]
    )
    missing = send_message(
        org, "telegram", "4244", media_urls=["https://cdn.example.com/404/a.png"]
    )

    settle(
        photo,
        document,
        missing,
        final={photo.pk: S.SENT, document.pk: S.SENT, missing.pk: S.FAILED},
    )

    calls = {
        r["body"]["chat_id"]: (r["path"].rsplit("/", 1)[-1], r["body"])
        for r in sandbox_client.requests("telegram")
    }
    method, body = calls["4242"]
    assert (method, body["photo"]) == ("sendPhoto", "https://cdn.example.com/t/1.jpg")
    assert (body["caption"], body["parse_mode"]) == ("*Ticket* 12\\.03", "MarkdownV2")
    method, body = calls["4243"]
    assert (method, body["document"]) == ("sendDocument", "https://cdn.example.com/t/invoice.pdf")
    assert "failed to get HTTP URL content" in missing.last_error


def test_instagram_attachment_and_human_agent_tag(stack, sandbox_client, org):
    stack.start_worker()
    image = send_message(org, "instagram", "5601", media_urls=["https://cdn.example.com/menu.png"])
    reply = send_message(org, "instagram", "5602", "A person here", tag="HUMAN_AGENT")

    # Sent, or further on if an earlier test left the sandbox's Instagram webhook subscribed.
    wait_for(
        lambda: (
            Message.objects.filter(
                pk__in=[image.pk, reply.pk], status__in=[S.SENT, S.DELIVERED, S.READ]
            ).count()
            == 2
        ),
        90,
        "both Instagram messages sent",
    )

    bodies = {
        r["body"]["recipient"]["id"]: r["body"]
        for r in sandbox_client.requests("instagram")
        if r["method"] == "POST"
    }
    assert bodies["5601"]["message"] == {
        "attachment": {"type": "image", "payload": {"url": "https://cdn.example.com/menu.png"}}
    }
    assert (bodies["5602"]["messaging_type"], bodies["5602"]["tag"]) == (
        "MESSAGE_TAG",
        "HUMAN_AGENT",
    )
