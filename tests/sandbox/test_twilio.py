"""The sandbox's Twilio WhatsApp API, driven through the official twilio SDK."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

SID = "AC" + "1" * 32
TOKEN = "twilio-auth-token-0123456789abcdef"
SENDER = "whatsapp:+14155238886"
USER = "whatsapp:+15551234567"


@pytest.fixture
def account(sandbox_client):
    registered = sandbox_client.add_account(
        "whatsapp", account_sid=SID, auth_token=TOKEN, senders=[SENDER]
    )
    sandbox_client.whatsapp_inbound(SID, USER)  # USER wrote first: free-form sends are in session
    return registered


def client(sandbox, token: str = TOKEN, timeout: float | None = None) -> Client:
    c = Client(SID, token, http_client=TwilioHttpClient(timeout=timeout))
    c.api.base_url = sandbox.url
    return c


def create_error(sandbox, **params) -> TwilioRestException:
    params = {"from_": SENDER, "to": USER, "body": "hello", **params}
    with pytest.raises(TwilioRestException) as caught:
        client(sandbox).messages.create(**params)
    return caught.value


def test_create_returns_201_queued_message(sandbox, account):
    message = client(sandbox).messages.create(from_=SENDER, to=USER, body="hello")

    assert message.sid.startswith("SM") and len(message.sid) == 34
    int(message.sid[2:], 16)
    assert message.status == "queued"
    assert (message.to, message.from_, message.body) == (USER, SENDER, "hello")
    assert message.account_sid == SID
    assert message.num_segments == "1"
    assert message.error_code is None
    assert message.date_created is not None and message.date_created.tzinfo is not None


def test_create_is_recorded_with_form_body_and_message_id(sandbox, sandbox_client, account):
    message = client(sandbox).messages.create(from_=SENDER, to=USER, body="hello")

    [sent] = sandbox_client.requests("whatsapp")
    assert sent["method"] == "POST"
    assert sent["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert sent["body"] == {"To": USER, "From": SENDER, "Body": "hello"}
    assert (sent["status"], sent["outcome"], sent["message_id"]) == (201, "sent", message.sid)
    assert sent["headers"]["Authorization"].startswith("Basic ")


def test_fetch_returns_the_message_and_account_check_works(sandbox, account):
    c = client(sandbox)
    sid = c.messages.create(from_=SENDER, to=USER, body="hello").sid

    assert c.messages(sid).fetch().sid == sid
    fetched = c.api.v2010.accounts(SID).fetch()
    assert (fetched.sid, fetched.status) == (SID, "active")


def test_unknown_message_is_20404(sandbox, account):
    with pytest.raises(TwilioRestException) as caught:
        client(sandbox).messages("SM" + "0" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_invalid_to_is_a_rest_exception_21211_not_a_service_exception(sandbox, account):
    err = create_error(sandbox, to="whatsapp:+15005550001")

    assert type(err) is TwilioRestException
    assert not isinstance(err, TwilioServiceException)
    assert (err.status, err.code) == (400, 21211)
    assert "Invalid 'To' Phone Number" in err.msg


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"to": "whatsapp:+15005550002"}, 21408),
        ({"to": "whatsapp:12"}, 21211),
        ({"body": "x" * 1601}, 21617),
        ({"from_": "whatsapp:+19995550000"}, 63007),
        ({"from_": "+14155238886"}, 21910),
    ],
)
def test_invalid_sends_get_their_twilio_codes(sandbox, account, params, code):
    err = create_error(sandbox, **params)
    assert (err.status, err.code) == (400, code)


def test_missing_fields_get_their_twilio_codes(sandbox, account):
    c = client(sandbox)
    for params, code in [
        ({"to": "", "from_": SENDER, "body": "hi"}, 21604),
        ({"to": USER, "body": "hi"}, 21603),
        ({"to": USER, "from_": SENDER}, 21602),
    ]:
        with pytest.raises(TwilioRestException) as caught:
            c.messages.create(**params)
        assert (caught.value.status, caught.value.code) == (400, code)


def test_wrong_token_is_20003_on_send_and_account_fetch(sandbox, account):
    c = client(sandbox, token="wrong")
    with pytest.raises(TwilioRestException) as caught:
        c.messages.create(from_=SENDER, to=USER, body="hello")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    with pytest.raises(TwilioRestException) as caught:
        c.api.v2010.accounts(SID).fetch()
    assert (caught.value.status, caught.value.code) == (401, 20003)


def test_unregistered_account_is_20003(sandbox, sandbox_client):
    with pytest.raises(TwilioRestException) as caught:
        client(sandbox).messages.create(from_=SENDER, to=USER, body="hello")
    assert caught.value.code == 20003
    assert sandbox_client.requests("whatsapp")[0]["outcome"] == "auth_failed"


def test_account_over_its_rate_gets_429_20429_with_retry_after(sandbox, sandbox_client):
    sandbox_client.add_account(
        "whatsapp", account_sid=SID, auth_token=TOKEN, senders=[SENDER], rate_per_second=1
    )
    c = client(sandbox)
    c.messages.create(from_=SENDER, to=USER, body="one")
    with pytest.raises(TwilioRestException) as caught:
        c.messages.create(from_=SENDER, to=USER, body="two")
    assert (caught.value.status, caught.value.code) == (429, 20429)
    throttled = sandbox_client.requests("whatsapp")[-1]
    assert throttled["outcome"] == "rate_limited"


def test_fault_503_uses_twilio_error_body_then_recovers(sandbox, sandbox_client, account):
    sandbox_client.fault("whatsapp", status=503, count=1)
    err = create_error(sandbox)
    assert (err.status, err.code) == (503, 20503)
    assert client(sandbox).messages.create(from_=SENDER, to=USER, body="again").status == "queued"


def test_status_callbacks_are_signed_sent_then_delivered(sandbox, account, receiver):
    message = client(sandbox).messages.create(
        from_=SENDER, to=USER, body="hello", status_callback=receiver.url
    )
    validator = RequestValidator(TOKEN)

    statuses = []
    for _ in range(2):
        call = receiver.next()
        headers, params = call.headers, call.form
        assert call.path == "/hooks?org=7"
        assert validator.validate(receiver.url, params, headers["X-Twilio-Signature"])
        assert not validator.validate(
            receiver.url, {**params, "To": "x"}, headers["X-Twilio-Signature"]
        )
        assert params["MessageSid"] == params["SmsSid"] == message.sid
        assert (params["AccountSid"], params["From"], params["To"]) == (SID, SENDER, USER)
        assert params["ApiVersion"] == "2010-04-01"
        assert params["ChannelPrefix"] == "whatsapp"
        assert "ErrorCode" not in params
        statuses.append(params["MessageStatus"])
    assert statuses == ["sent", "delivered"]
    assert client(sandbox).messages(message.sid).fetch().status == "delivered"


@pytest.mark.parametrize(
    ("to", "final", "code"),
    [
        ("whatsapp:+15005550003", "failed", "63016"),
        ("whatsapp:+15005550004", "undelivered", "63018"),
    ],
)
def test_magic_recipients_fail_asynchronously(sandbox, account, receiver, to, final, code):
    message = client(sandbox).messages.create(
        from_=SENDER, to=to, body="hello", status_callback=receiver.url
    )
    assert message.status == "queued"

    while True:
        call = receiver.next()
        headers, params = call.headers, call.form
        assert RequestValidator(TOKEN).validate(receiver.url, params, headers["X-Twilio-Signature"])
        if params["MessageStatus"] == final:
            break
        assert params["MessageStatus"] == "sent"
    assert params["ErrorCode"] == code
    fetched = client(sandbox).messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == (final, int(code))


def test_callbacks_to_non_local_hosts_are_refused_and_recorded(sandbox, sandbox_client, account):
    sid = (
        client(sandbox)
        .messages.create(
            from_=SENDER, to=USER, body="hello", status_callback="https://example.com/hook"
        )
        .sid
    )

    refused = [c for c in sandbox_client.callbacks() if c["message_id"] == sid]
    assert [c["params"]["MessageStatus"] for c in refused] == ["sent", "delivered"]
    assert all(c["outcome"].startswith("refused") for c in refused)


def test_sends_above_the_sender_mps_are_queued_not_rejected(sandbox, sandbox_client, account):
    sandbox_client.configure(whatsapp_sender_mps=1, callback_delay_ms=[0, 0])
    c = client(sandbox)
    first, second = (c.messages.create(from_=SENDER, to=USER, body=str(i)) for i in range(2))

    assert c.messages(first.sid).fetch().status == "delivered"
    assert c.messages(second.sid).fetch().status == "queued"
