"""TwilioWhatsApp against the sandbox's Twilio API, through the official twilio SDK."""

from __future__ import annotations

import json

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.whatsapp import TwilioWhatsApp, whatsapp_address
from tests.shared.providers.helpers import Answer, Mapped, assert_mapped, provoke

SID = "AC" + "1a" * 16
TOKEN = "CANARYtwilioAUTHtoken0123456789ab"
SENDER = "whatsapp:+14155238886"


@pytest.fixture
def account(sandbox_client):
    sandbox_client.add_account("whatsapp", account_sid=SID, auth_token=TOKEN, senders=[SENDER])


def adapter(base_url: str, *, token: str = TOKEN, timeout: float = 5.0) -> TwilioWhatsApp:
    extra = {"account_sid": SID, "from_whatsapp": "+14155238886"}
    return TwilioWhatsApp(token=token, extra=extra, base_url=base_url, timeout=timeout)


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


WRONG = "CANARYwrongTOKEN0123456789abcdef"


def twilio_error(code: int, status: int, message: str) -> dict:
    """A Twilio REST error body."""
    return {"code": code, "message": message, "more_info": "", "status": status}


# How the sandbox answers -> the ProviderError the adapter must raise.
ERRORS = [
    pytest.param(
        Answer(token=WRONG),
        Mapped("credentials", "20003", status=401, says="Twilio rejected the credentials (20003)"),
        id="unknown-token-20003",
    ),
    pytest.param(
        Answer(token=WRONG, call="check"),
        Mapped("credentials", "20003", status=401),
        id="check-unknown-token-20003",
    ),
    pytest.param(
        Answer(account={"status": "suspended"}, call="check"),
        Mapped("credentials", "20003", status=401),
        id="check-suspended-account",
    ),
    pytest.param(
        Answer(to="+15005550001"),
        Mapped("permanent", "21211", status=400, says="21211"),
        id="invalid-to-21211",
    ),
    pytest.param(
        Answer(to="+15005550002"),
        Mapped("permanent", "21408", status=400, says="21408"),
        id="region-not-enabled-21408",
    ),
    pytest.param(
        Answer(account={"senders": []}),
        Mapped("permanent", "63007", status=400),
        id="unregistered-sender-63007",
    ),
    pytest.param(
        Answer(fault={"status": 400, "body": twilio_error(63016, 400, "Outside the window")}),
        Mapped("permanent", "63016", status=400, says="Outside the window (63016)"),
        id="outside-24h-window-63016",
    ),
    pytest.param(
        Answer(fault={"status": 429, "retry_after": 7}),
        Mapped("rate_limited", "20429", retry_after=(6, 8), status=429),
        id="http-429-retry-after",
    ),
    pytest.param(
        Answer(account={"rate_per_second": 1}, second=True),
        Mapped("rate_limited", "20429", retry_after=1, status=429),
        id="account-over-its-rate-20429",
    ),
    pytest.param(
        Answer(fault={"status": 400, "body": twilio_error(63018, 400, "Rate limit exceeded")}),
        Mapped("rate_limited", "63018", retry_after=60, status=400),
        id="messaging-limit-63018-waits-a-minute",
    ),
    pytest.param(
        Answer(fault={"status": 503}),
        Mapped("transient", "20503", status=503),
        id="http-503",
    ),
    pytest.param(
        Answer(fault={"status": 400, "body": twilio_error(20500, 400, "Internal error")}),
        Mapped("transient", "20500", status=400),
        id="internal-error-20500",
    ),
    pytest.param(
        Answer(fault={"mode": "timeout"}),
        Mapped("transient", says="Twilio did not answer within 0.5 s"),
        id="timeout",
    ),
]


@pytest.mark.parametrize(("answer", "mapped"), ERRORS)
def test_whatsapp_maps_each_provider_answer_to_one_error(
    sandbox_url, sandbox_client, assert_secret_free, answer, mapped
):
    token = answer.token or TOKEN
    provider = adapter(sandbox_url, token=token, timeout=answer.timeout)
    message = OutboundMessage(to=answer.to or "+15551234567", body="hello")
    account = {"account_sid": SID, "auth_token": TOKEN, "senders": [SENDER]}
    err = provoke(
        sandbox_client, "whatsapp", answer, account, provider, lambda: provider.send(message)
    )
    assert_mapped(err, mapped, assert_secret_free, [token])


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+15551234567", "whatsapp:+15551234567"),
        ("whatsapp:+15551234567", "whatsapp:+15551234567"),
        (" 15551234567 ", "whatsapp:+15551234567"),
    ],
)
def test_whatsapp_addresses_always_carry_the_prefix(number, expected):
    assert whatsapp_address(number) == expected


CONTENT_SID = "HX" + "c0" * 16


def test_whatsapp_template_goes_as_content_sid_and_a_json_string_of_variables(
    sandbox_url, sandbox_client, account
):
    sandbox_client.add_whatsapp_template(
        SID, CONTENT_SID, "Hi {{1}} at {{2}}", {"1": "a", "2": "b"}
    )
    template = {"content_sid": CONTENT_SID, "variables": {"1": "Ana", "2": "10:30"}}

    sid = adapter(sandbox_url).send(OutboundMessage(to="+14155550100", body="", template=template))

    sent = sandbox_client.requests("whatsapp")[-1]["body"]
    assert sid.startswith("SM")
    assert sent["ContentSid"] == CONTENT_SID
    assert json.loads(sent["ContentVariables"]) == template["variables"]
    assert "Body" not in sent and "MediaUrl" not in sent


def test_whatsapp_unknown_template_is_a_permanent_21655(sandbox_url, account):
    message = OutboundMessage(to="+14155550100", body="", template={"content_sid": CONTENT_SID})
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).send(message)

    assert (caught.value.kind, caught.value.code) == ("permanent", "21655")


def test_whatsapp_media_goes_as_media_url_beside_the_body(sandbox_url, sandbox_client, account):
    url = "https://cdn.example.com/a.jpg"
    adapter(sandbox_url).send(OutboundMessage(to="+14155550100", body="Ticket", media_urls=(url,)))

    sent = sandbox_client.requests("whatsapp")[-1]["body"]
    assert sent["MediaUrl"] in (url, [url])
    assert sent["Body"] == "Ticket"
