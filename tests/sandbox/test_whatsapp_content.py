"""WhatsApp Content templates, the 24-hour customer-service window and media, through the
official twilio SDK (and raw HTTP where the SDK cannot send the malformed input)."""

from __future__ import annotations

import json

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from sandbox.testing import SandboxError

SID = "AC" + "3" * 32
TOKEN = "twilio-content-token-0123456789ab"
SENDER = "whatsapp:+14155238886"
OTHER_SENDER = "whatsapp:+14155230000"
USER = "whatsapp:+15551234567"
TEMPLATE = "HX" + "ab" * 16
LONG_TEMPLATE = "HX" + "cd" * 16
FOREIGN_TEMPLATE = "HX" + "ef" * 16


@pytest.fixture
def twilio(sandbox, sandbox_client) -> Client:
    sandbox_client.add_accounts(
        [
            {
                "provider": "whatsapp",
                "account_sid": SID,
                "auth_token": TOKEN,
                "senders": [SENDER, OTHER_SENDER],
                "content_templates": [
                    {
                        "sid": TEMPLATE,
                        "body": "Hi {{1}}, your visit is at {{2}}",
                        "variables": {"1": "there", "2": "soon"},
                    }
                ],
            },
            {
                "provider": "whatsapp",
                "account_sid": "AC" + "4" * 32,
                "auth_token": "other",
                "content_templates": [{"sid": FOREIGN_TEMPLATE, "body": "Not yours"}],
            },
        ]
    )
    sandbox_client.configure(callback_delay_ms=[5, 20])
    client = Client(SID, TOKEN)
    client.api.base_url = sandbox.url
    return client


def post(sandbox, **form) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/2010-04-01/Accounts/{SID}/Messages.json",
        auth=(SID, TOKEN),
        data={"To": USER, "From": SENDER, **form},
        timeout=5,
    )


def rest_error(twilio: Client, **params) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as caught:
        twilio.messages.create(**{"from_": SENDER, "to": USER, **params})
    return caught.value


def final_callback(receiver, final: str = "failed") -> dict[str, str]:
    """Read status callbacks until `final` arrives; returns its form fields."""
    while True:
        form = receiver.next().form
        if form["MessageStatus"] in ("failed", "undelivered", final):
            return form


# --- Content templates ---------------------------------------------------------------------


def test_template_send_renders_variables_with_defaults_for_missing_ones(twilio, receiver):
    message = twilio.messages.create(
        from_=SENDER,
        to=USER,
        content_sid=TEMPLATE,
        content_variables=json.dumps({"1": "Ann"}),
        status_callback=receiver.url,
    )
    assert message.status == "queued"
    assert message.body == "Hi Ann, your visit is at soon"
    assert message.num_media == "0"
    assert [c.form["MessageStatus"] for c in receiver.take(2)] == ["sent", "delivered"]


def test_template_passes_outside_the_window_and_supersedes_body_and_media(sandbox, twilio):
    response = post(
        sandbox,
        ContentSid=TEMPLATE,
        ContentVariables=json.dumps({"1": "Bo", "2": "9:00"}),
        Body="ignored",
        MediaUrl="https://media.test/a.jpg",
    )
    assert response.status_code == 201
    assert (response.json()["body"], response.json()["num_media"]) == (
        "Hi Bo, your visit is at 9:00",
        "0",
    )


def test_template_with_a_messaging_service_starts_accepted(sandbox, sandbox_client, twilio):
    service = "MG" + "5" * 32
    message = twilio.messages.create(
        to=USER, messaging_service_sid=service, content_sid=TEMPLATE, content_variables="{}"
    )
    assert (message.status, message.body) == ("accepted", "Hi there, your visit is at soon")


def test_content_variables_without_content_sid_is_21654(twilio):
    err = rest_error(twilio, body="hi", content_variables=json.dumps({"1": "x"}))
    assert (err.status, err.code) == (400, 21654)


@pytest.mark.parametrize(
    "content_sid", ["HX123", "HX" + "0" * 32, FOREIGN_TEMPLATE, "hx" + "ab" * 16 + "0"]
)
def test_unknown_malformed_or_foreign_content_sid_is_21655(twilio, content_sid):
    err = rest_error(twilio, content_sid=content_sid)
    assert (err.status, err.code) == (400, 21655)
    assert "The ContentSid is Invalid" in err.msg


def test_a_dict_passed_to_the_sdk_is_sent_as_1_and_is_21656(sandbox, sandbox_client, twilio):
    err = rest_error(twilio, content_sid=TEMPLATE, content_variables={"1": "Ann"})
    assert (err.status, err.code) == (400, 21656)
    [sent] = sandbox_client.requests("whatsapp")
    assert sent["body"]["ContentVariables"] == "1"


@pytest.mark.parametrize(
    "variables",
    [
        "not json",
        json.dumps(["Ann"]),
        json.dumps("Ann"),
        json.dumps({str(i): "v" for i in range(101)}),
        json.dumps({"k" * 17: "v"}),
        json.dumps({"1": 5}),
        json.dumps({"1": None}),
        json.dumps({"1": ""}),
        json.dumps({"1": "x" * 1601}),
        json.dumps({"1": "two\nlines"}),
        json.dumps({"1": "tab\there"}),
        json.dumps({"1": "five     spaces"}),
    ],
)
def test_invalid_content_variables_are_21656(twilio, variables):
    err = rest_error(twilio, content_sid=TEMPLATE, content_variables=variables)
    assert (err.status, err.code) == (400, 21656)
    assert "The ContentVariables Parameter is invalid" in err.msg


def test_edge_values_of_content_variables_are_accepted(twilio):
    variables = {"k" * 16: "x", "1": "four    spaces", "2": "y" * 1000}
    message = twilio.messages.create(
        from_=SENDER, to=USER, content_sid=TEMPLATE, content_variables=json.dumps(variables)
    )
    assert message.body == "Hi four    spaces, your visit is at " + "y" * 1000


def test_variables_the_template_lacks_fail_asynchronously_63028(twilio, receiver):
    message = twilio.messages.create(
        from_=SENDER,
        to=USER,
        content_sid=TEMPLATE,
        content_variables=json.dumps({"1": "Ann", "3": "extra"}),
        status_callback=receiver.url,
    )
    assert message.status == "queued"
    form = receiver.next().form
    assert (form["MessageStatus"], form["ErrorCode"]) == ("failed", "63028")
    fetched = twilio.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("failed", 63028)


def test_rendered_template_over_1024_chars_fails_asynchronously_63021(
    twilio, sandbox_client, receiver
):
    sandbox_client.add_whatsapp_template(SID, LONG_TEMPLATE, "Note: {{1}}", {"1": "short"})
    short = twilio.messages.create(from_=SENDER, to=USER, content_sid=LONG_TEMPLATE)
    assert short.body == "Note: short"
    message = twilio.messages.create(
        from_=SENDER,
        to=USER,
        content_sid=LONG_TEMPLATE,
        content_variables=json.dumps({"1": "z" * 1100}),
        status_callback=receiver.url,
    )
    assert message.status == "queued"
    form = receiver.next().form
    assert (form["MessageStatus"], form["ErrorCode"]) == ("failed", "63021")


def test_template_control_validates_registers_and_reset_forgets(sandbox_client):
    with pytest.raises(SandboxError, match="404"):
        sandbox_client.add_whatsapp_template("AC" + "9" * 32, TEMPLATE, "Hi")
    sandbox_client.add_account("whatsapp", account_sid=SID, auth_token=TOKEN)
    with pytest.raises(SandboxError, match="400"):
        sandbox_client.add_whatsapp_template(SID, "HX12", "Hi")
    with pytest.raises(SandboxError, match="no default value"):
        sandbox_client.add_whatsapp_template(SID, TEMPLATE, "Hi {{1}}")
    added = sandbox_client.add_whatsapp_template(SID, TEMPLATE, "Hi {{1}}", {"1": "you"})
    assert added == {
        "account_sid": SID,
        "sid": TEMPLATE,
        "body": "Hi {{1}}",
        "variables": {"1": "you"},
    }
    [account] = sandbox_client._call("GET", "/_sandbox/accounts").json()
    assert account["content_templates"] == [
        {"sid": TEMPLATE, "body": "Hi {{1}}", "variables": {"1": "you"}}
    ]
    assert account["session_window_hours"] == 24
    sandbox_client.reset()
    assert sandbox_client._call("GET", "/_sandbox/accounts").json() == []


# --- The 24-hour customer-service window ---------------------------------------------------


def test_free_form_without_an_inbound_message_fails_63016_asynchronously(twilio, receiver):
    message = twilio.messages.create(
        from_=SENDER, to=USER, body="hello", status_callback=receiver.url
    )
    assert message.status == "queued"
    form = receiver.next().form
    assert (form["MessageStatus"], form["ErrorCode"]) == ("failed", "63016")
    assert "outside the allowed window" in form["ChannelStatusMessage"]
    receiver.assert_quiet()
    fetched = twilio.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("failed", 63016)


def test_an_inbound_message_opens_the_window_for_that_sender(twilio, sandbox_client, receiver):
    sandbox_client.whatsapp_inbound(SID, USER, sender=SENDER)
    inside = twilio.messages.create(
        from_=SENDER, to=USER, body="hello", status_callback=receiver.url
    )
    assert [c.form["MessageStatus"] for c in receiver.take(2)] == ["sent", "delivered"]
    assert twilio.messages(inside.sid).fetch().status == "delivered"

    other = twilio.messages.create(
        from_=OTHER_SENDER, to=USER, body="hello", status_callback=receiver.url
    )
    form = final_callback(receiver)
    assert (form["MessageSid"], form["ErrorCode"]) == (other.sid, "63016")


def test_an_inbound_without_to_opens_every_sender_and_messaging_services(
    twilio, sandbox_client, receiver
):
    sandbox_client.whatsapp_inbound(SID, USER)
    for params in ({"from_": OTHER_SENDER}, {"messaging_service_sid": "MG" + "6" * 32}):
        twilio.messages.create(to=USER, body="hi", status_callback=receiver.url, **params)
        assert final_callback(receiver, "delivered")["MessageStatus"] == "delivered"


def test_an_old_inbound_message_no_longer_opens_the_window(twilio, sandbox_client, receiver):
    sandbox_client.whatsapp_inbound(SID, USER, seconds_ago=24 * 3600 + 5)
    twilio.messages.create(from_=SENDER, to=USER, body="late", status_callback=receiver.url)
    assert final_callback(receiver)["ErrorCode"] == "63016"

    sandbox_client.add_account(
        "whatsapp", account_sid=SID, auth_token=TOKEN, senders=[SENDER], session_window_hours=48
    )
    twilio.messages.create(from_=SENDER, to=USER, body="in 48h", status_callback=receiver.url)
    assert final_callback(receiver, "delivered")["MessageStatus"] == "delivered"


def test_a_null_window_puts_every_customer_in_session(twilio, sandbox_client, receiver):
    sandbox_client.add_account(
        "whatsapp", account_sid=SID, auth_token=TOKEN, senders=[SENDER], session_window_hours=None
    )
    twilio.messages.create(from_=SENDER, to=USER, body="load", status_callback=receiver.url)
    assert final_callback(receiver, "delivered")["MessageStatus"] == "delivered"


def test_magic_recipients_count_as_in_session(twilio, receiver):
    twilio.messages.create(
        from_=SENDER, to="whatsapp:+15005550004", body="hi", status_callback=receiver.url
    )
    form = final_callback(receiver)
    assert (form["MessageStatus"], form["ErrorCode"]) == ("undelivered", "63018")


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        ({"account_sid": "AC" + "9" * 32, "from": USER}, 404),
        ({"account_sid": SID, "from": "+15551234567"}, 400),
        ({"account_sid": SID, "from": USER, "to": "whatsapp:+19999999999"}, 400),
        ({"account_sid": SID, "from": USER, "seconds_ago": -1}, 400),
    ],
)
def test_inbound_control_validates(sandbox, twilio, spec, status):
    response = requests.post(f"{sandbox.url}/_sandbox/whatsapp/inbound", json=spec, timeout=5)
    assert response.status_code == status


# --- Media ---------------------------------------------------------------------------------


def test_media_only_send_takes_the_first_url_and_obeys_the_window(twilio, sandbox_client, receiver):
    urls = ["https://media.test/a.jpg", "https://media.test/b.jpg"]
    outside = twilio.messages.create(
        from_=SENDER, to=USER, media_url=urls, status_callback=receiver.url
    )
    assert (outside.status, outside.num_media, outside.body) == ("queued", "1", "")
    assert final_callback(receiver)["ErrorCode"] == "63016"

    sandbox_client.whatsapp_inbound(SID, USER)
    inside = twilio.messages.create(
        from_=SENDER, to=USER, body="see", media_url=urls[:1], status_callback=receiver.url
    )
    assert inside.num_media == "1"
    assert final_callback(receiver, "delivered")["MessageSid"] == inside.sid


@pytest.mark.parametrize(
    "urls", [["ftp://media.test/a.jpg"], ["https://media.test/a.jpg", "not a url"], ["https://"]]
)
def test_non_http_media_urls_are_21620(twilio, urls):
    err = rest_error(twilio, body="x", media_url=urls)
    assert (err.status, err.code) == (400, 21620)
    assert "Invalid media URL(s)" in err.msg


def test_nothing_to_send_is_still_21602(twilio):
    err = rest_error(twilio, body="")
    assert (err.status, err.code) == (400, 21602)


def test_an_accounts_file_template_survives_reset_and_a_control_one_does_not(tmp_path):
    from sandbox.testing import SandboxProcess

    accounts = tmp_path / "accounts.json"
    spec = {
        "provider": "whatsapp",
        "account_sid": SID,
        "auth_token": TOKEN,
        "senders": [SENDER],
        "content_templates": [{"sid": TEMPLATE, "body": "Hi {{1}}", "variables": {"1": "you"}}],
    }
    accounts.write_text(json.dumps([spec]))
    with SandboxProcess(extra_args=["--accounts", str(accounts)]) as proc:
        proc.client.add_whatsapp_template(SID, LONG_TEMPLATE, "Extra")
        proc.client.reset()
        client = Client(SID, TOKEN)
        client.api.base_url = proc.url
        message = client.messages.create(from_=SENDER, to=USER, content_sid=TEMPLATE)
        assert message.body == "Hi you"
        with pytest.raises(TwilioRestException) as caught:
            client.messages.create(from_=SENDER, to=USER, content_sid=LONG_TEMPLATE)
        assert caught.value.code == 21655
