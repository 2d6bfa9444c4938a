"""TwilioWhatsApp against the sandbox's Twilio API, through the official twilio SDK."""

from __future__ import annotations

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.whatsapp import TwilioWhatsApp

SID = "AC" + "1a" * 16
TOKEN = "CANARYtwilioAUTHtoken0123456789ab"
SENDER = "whatsapp:+14155238886"


@pytest.fixture
def account(sandbox_client):
    sandbox_client.add_account("whatsapp", account_sid=SID, auth_token=TOKEN, senders=[SENDER])


def adapter(base_url: str, *, token: str = TOKEN, timeout: float = 5.0) -> TwilioWhatsApp:
    extra = {"account_sid": SID, "from_whatsapp": "+14155238886"}
    return TwilioWhatsApp(token=token, extra=extra, base_url=base_url, timeout=timeout)


def send_error(provider: TwilioWhatsApp, to: str = "+15551234567") -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        provider.send(OutboundMessage(to=to, body="hello"))
    return caught.value


def test_whatsapp_check_describes_the_account(sandbox_url, account):
    assert adapter(sandbox_url).check().startswith("Twilio account ")


def test_whatsapp_send_returns_the_message_sid(sandbox_url, sandbox_client, account):
    message = OutboundMessage(
        to="+15551234567", body="hello", status_callback="http://127.0.0.1:9/twilio/status"
    )
    sid = adapter(sandbox_url).send(message)

    assert sid.startswith("SM")
    sent = sandbox_client.requests("whatsapp")[-1]
    assert sent["method"] == "POST"
    assert sent["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert sent["body"]["To"] == "whatsapp:+15551234567"
    assert sent["body"]["From"] == SENDER
    assert sent["body"]["StatusCallback"] == "http://127.0.0.1:9/twilio/status"


def test_whatsapp_send_ignores_twilio_edge_and_region_env(sandbox_url, account, monkeypatch):
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    assert adapter(sandbox_url).send(OutboundMessage(to="whatsapp:+15551234567", body="hi"))


def test_whatsapp_wrong_token_is_credentials_rejected(sandbox_url, account, assert_secret_free):
    wrong = "CANARYwrongTOKEN0123456789abcdef"
    err = send_error(adapter(sandbox_url, token=wrong))
    assert err.kind == "credentials"
    assert err.code == "20003"
    assert str(err) == "Twilio rejected the credentials (20003)"
    assert_secret_free(err, wrong)


def test_whatsapp_check_with_wrong_token_is_credentials_rejected(sandbox_url, account):
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url, token="CANARYwrongTOKEN0123456789abcdef").check()
    assert caught.value.credentials_rejected


@pytest.mark.parametrize(("to", "code"), [("+15005550001", "21211"), ("+15005550002", "21408")])
def test_whatsapp_invalid_recipient_is_permanent(sandbox_url, account, to, code):
    err = send_error(adapter(sandbox_url), to=to)
    assert err.kind == "permanent"
    assert err.code == code
    assert err.status == 400
    assert code in str(err)


def test_whatsapp_unregistered_sender_is_permanent(sandbox_url, sandbox_client):
    sandbox_client.add_account("whatsapp", account_sid=SID, auth_token=TOKEN, senders=[])
    err = send_error(adapter(sandbox_url))
    assert err.kind == "permanent"
    assert err.code == "63007"


def test_whatsapp_429_waits_retry_after(sandbox_url, sandbox_client, account):
    sandbox_client.fault("whatsapp", mode="status", status=429, retry_after=7, count=1)
    err = send_error(adapter(sandbox_url))
    assert err.rate_limited
    assert err.retry_after == pytest.approx(7, abs=1)


def test_whatsapp_503_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("whatsapp", mode="status", status=503, count=1)
    err = send_error(adapter(sandbox_url))
    assert err.kind == "transient"
    assert not err.permanent


def test_whatsapp_timeout_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("whatsapp", mode="timeout", count=1)
    err = send_error(adapter(sandbox_url, timeout=0.5))
    assert err.kind == "transient"
    assert str(err) == "Twilio did not answer within 0.5 s"


def test_whatsapp_account_over_its_rate_gets_20429(sandbox_url, sandbox_client):
    sandbox_client.add_account(
        "whatsapp", account_sid=SID, auth_token=TOKEN, senders=[SENDER], rate_per_second=1
    )
    provider = adapter(sandbox_url)
    provider.send(OutboundMessage(to="+15551234567", body="first"))
    err = send_error(provider)
    assert err.rate_limited
    assert err.code == "20429"
    assert err.retry_after == 1


def test_whatsapp_suspended_account_is_credentials_rejected(sandbox_url, sandbox_client):
    sandbox_client.add_account(
        "whatsapp", account_sid=SID, auth_token=TOKEN, senders=[SENDER], status="suspended"
    )
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).check()
    assert caught.value.credentials_rejected
