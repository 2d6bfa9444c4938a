"""SendGridEmail against the sandbox's SendGrid v3 API, through the official sendgrid SDK."""

from __future__ import annotations

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.sendgrid import SendGridEmail

KEY = "SG.CANARYsendgrid.KEYabcdefghijklmnop"
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


def send_error(provider: SendGridEmail, to: str = "someone@example.test") -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        provider.send(email(to))
    return caught.value


def test_sendgrid_check_confirms_mail_send_scope(sandbox_url, account):
    assert "mail.send" in adapter(sandbox_url).check()


def test_sendgrid_check_without_mail_send_is_credentials_rejected(sandbox_url, sandbox_client):
    sandbox_client.add_account("sendgrid", api_key=KEY, scopes=["user.profile.read"])
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).check()
    assert caught.value.credentials_rejected
    assert "mail.send" in str(caught.value)


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


def test_sendgrid_wrong_key_is_credentials_rejected(sandbox_url, account, assert_secret_free):
    wrong = "SG.CANARYwrong.KEYabcdefghijklmnop"
    err = send_error(adapter(sandbox_url, key=wrong))
    assert err.kind == "credentials"
    assert err.status == 401
    assert_secret_free(err, wrong)


def test_sendgrid_invalid_recipient_is_permanent(sandbox_url, account):
    err = send_error(adapter(sandbox_url), to="invalid@sandbox.test")
    assert err.kind == "permanent"
    assert err.status == 400


def test_sendgrid_unverified_sender_is_permanent_not_credentials(sandbox_url, account):
    err = send_error(adapter(sandbox_url, sender="stranger@corbi.test"))
    assert err.kind == "permanent"
    assert err.status == 403
    assert str(err) == "SendGrid: the from address is not a verified sender"


def test_sendgrid_429_waits_until_rate_limit_reset(sandbox_url, sandbox_client, account):
    sandbox_client.fault("sendgrid", mode="status", status=429, retry_after=7, count=1)
    err = send_error(adapter(sandbox_url))
    assert err.rate_limited
    assert err.retry_after == pytest.approx(7, abs=1.5)


def test_sendgrid_503_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("sendgrid", mode="status", status=503, count=1)
    assert send_error(adapter(sandbox_url)).kind == "transient"


def test_sendgrid_timeout_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("sendgrid", mode="timeout", count=1)
    err = send_error(adapter(sandbox_url, timeout=0.5))
    assert err.kind == "transient"
    assert str(err) == "SendGrid did not answer within 0.5 s"


def test_sendgrid_key_without_mail_send_is_credentials_rejected_on_send(
    sandbox_url, sandbox_client
):
    sandbox_client.add_account("sendgrid", api_key=KEY, scopes=["user.profile.read"])
    err = send_error(adapter(sandbox_url))
    assert err.kind == "credentials"
    assert err.status == 403


def test_sendgrid_account_over_its_rate_waits_at_least_a_second(sandbox_url, sandbox_client):
    sandbox_client.add_account("sendgrid", api_key=KEY, rate_per_second=1)
    provider = adapter(sandbox_url)
    provider.send(email())
    err = send_error(provider)
    assert err.rate_limited
    assert 1 <= err.retry_after <= 2.5


def test_sendgrid_oversized_email_is_permanent(sandbox_url, sandbox_client, account):
    sandbox_client.fault("sendgrid", mode="status", status=413, count=1)
    assert send_error(adapter(sandbox_url)).kind == "permanent"


def test_sendgrid_email_without_content_is_refused_before_sending(sandbox_url, sandbox_client):
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).send(OutboundMessage(to="someone@example.test", body=""))
    assert caught.value.kind == "permanent"
    assert sandbox_client.requests("sendgrid") == []
