"""SendGridEmail against the sandbox's SendGrid v3 API, through the official sendgrid SDK."""

from __future__ import annotations

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.sendgrid import SendGridEmail
from tests.shared.providers.helpers import Answer, Mapped, assert_mapped, provoke

KEY = "SG.CANARYsgApiKq7.KEYabcdefghijklmnop"
SENDER = "noreply@corbi.test"


@pytest.fixture
def account(sandbox_client):
    sandbox_client.add_account("sendgrid", api_key=KEY, verified_senders=[SENDER])


def adapter(
    base_url: str, *, key: str = KEY, sender: str = SENDER, timeout: float = 5.0
) -> SendGridEmail:
    extra = {"from_email": sender, "from_name": "Corbi"}
    return SendGridEmail(token=key, extra=extra, base_url=base_url, timeout=timeout)


def email(to: str = "someone@example.test") -> OutboundMessage:
    return OutboundMessage(
        to=to, body="plain", html="<p>html</p>", subject="Hello", reference="msg-1"
    )


def test_sendgrid_check_confirms_mail_send_scope(sandbox_url, account):
    assert "mail.send" in adapter(sandbox_url).check()


def test_sendgrid_send_returns_the_x_message_id(sandbox_url, sandbox_client, account):
    message_id = adapter(sandbox_url).send(email())

    assert message_id
    sent = sandbox_client.requests("sendgrid")[-1]
    assert sent["method"] == "POST"
    assert sent["path"] == "/v3/mail/send"
    assert sent["body"]["from"] == {"email": SENDER, "name": "Corbi"}
    assert sent["body"]["subject"] == "Hello"
    assert [part["type"] for part in sent["body"]["content"]] == ["text/plain", "text/html"]
    assert sent["body"]["custom_args"] == {"corbi_reference": "msg-1"}


WRONG = "SG.CANARYwrong.KEYabcdefghijklmnop"
NO_MAIL_SEND = {"scopes": ["user.profile.read"]}


def errors(message: str, field: str | None = None) -> dict:
    """A SendGrid v3 error body."""
    return {"errors": [{"message": message, "field": field, "help": None}]}


# How the sandbox answers -> the ProviderError the adapter must raise.
ERRORS = [
    pytest.param(
        Answer(token=WRONG),
        Mapped("credentials", "401", status=401, says="SendGrid rejected the API key (401)"),
        id="unknown-key-401",
    ),
    pytest.param(
        Answer(account=NO_MAIL_SEND),
        Mapped("credentials", "403", status=403),
        id="key-without-mail-send-403",
    ),
    pytest.param(
        Answer(account=NO_MAIL_SEND, call="check"),
        Mapped("credentials", "scope", says="mail.send"),
        id="check-key-without-mail-send",
    ),
    pytest.param(
        Answer(fault={"status": 403, "body": errors("access forbidden")}),
        Mapped("credentials", "403", status=403, says="access forbidden"),
        id="http-403-forbidden",
    ),
    pytest.param(
        Answer(to="invalid@sandbox.test"),
        Mapped("permanent", "400", status=400),
        id="invalid-recipient-400",
    ),
    pytest.param(
        Answer(extra={"from_email": "stranger@corbi.test"}),
        Mapped(
            "permanent",
            "403",
            status=403,
            says="SendGrid: the from address is not a verified sender",
        ),
        id="unverified-sender-403-is-not-credentials",
    ),
    pytest.param(
        Answer(fault={"status": 413}),
        Mapped("permanent", "413", status=413, says="too large"),
        id="oversized-413",
    ),
    pytest.param(
        Answer(fault={"status": 429, "retry_after": 7}),
        Mapped("rate_limited", "429", retry_after=(5.5, 8.5), status=429),
        id="http-429-until-rate-limit-reset",
    ),
    pytest.param(
        Answer(account={"rate_per_second": 1}, second=True),
        Mapped("rate_limited", "429", retry_after=(1, 2.5), status=429),
        id="account-over-its-rate-429",
    ),
    pytest.param(
        Answer(fault={"status": 403, "body": errors("You are under a temporary block")}),
        Mapped("rate_limited", "403", retry_after=60, status=403),
        id="temporary-block-403-waits-a-minute",
    ),
    pytest.param(
        Answer(fault={"status": 503}),
        Mapped("transient", "503", status=503),
        id="http-503",
    ),
    pytest.param(
        Answer(fault={"mode": "timeout"}),
        Mapped("transient", says="SendGrid did not answer within 0.5 s"),
        id="timeout",
    ),
]


@pytest.mark.parametrize(("answer", "mapped"), ERRORS)
def test_sendgrid_maps_each_provider_answer_to_one_error(
    sandbox_url, sandbox_client, assert_secret_free, answer, mapped
):
    key = answer.token or KEY
    sender = (answer.extra or {}).get("from_email", SENDER)
    provider = adapter(sandbox_url, key=key, sender=sender, timeout=answer.timeout)
    message = email(answer.to or "someone@example.test")
    account = {"api_key": KEY, "verified_senders": [SENDER]}
    err = provoke(
        sandbox_client, "sendgrid", answer, account, provider, lambda: provider.send(message)
    )
    assert_mapped(err, mapped, assert_secret_free, [key])


def test_sendgrid_email_without_content_is_refused_before_sending(sandbox_url, sandbox_client):
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).send(OutboundMessage(to="someone@example.test", body=""))
    assert caught.value.kind == "permanent"
    assert sandbox_client.requests("sendgrid") == []


def test_sendgrid_dynamic_template_with_attachments(sandbox_url, sandbox_client, account):
    from shared.providers.base import Attachment

    message = OutboundMessage(
        to="someone@example.test",
        body="",
        subject="Receipt",
        template={"id": "d-" + "ab" * 16, "data": {"name": "Ana"}},
        attachments=(
            Attachment("r.pdf", "JVBERi0xLjQK", "application/pdf"),
            Attachment("logo.png", "iVBORw0K", "image/png", "inline", "logo"),
        ),
    )
    assert adapter(sandbox_url).send(message)

    body = sandbox_client.requests("sendgrid")[-1]["body"]
    assert body["template_id"] == "d-" + "ab" * 16
    assert body["personalizations"][0]["dynamic_template_data"] == {
        "name": "Ana",
        "subject": "Receipt",
    }
    assert "content" not in body
    assert body["attachments"][1] == {
        "content": "iVBORw0K",
        "filename": "logo.png",
        "type": "image/png",
        "disposition": "inline",
        "content_id": "logo",
    }
    assert "JVBERi0xLjQK" not in repr(message)


def test_sendgrid_refuses_a_malformed_template_id_permanently(sandbox_url, account):
    message = OutboundMessage(to="someone@example.test", body="", template={"id": "d-nope"})
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).send(message)

    assert caught.value.kind == "permanent"
    assert "template_id" in str(caught.value)
