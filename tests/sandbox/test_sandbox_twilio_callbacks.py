"""Twilio status callbacks from the sandbox, checked with twilio's own RequestValidator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from sandbox.testing import SandboxError

SID = "AC" + "2" * 32
TOKEN = "twilio-callback-token-0123456789"
SENDER = "whatsapp:+14155238886"


@pytest.fixture
def twilio(sandbox, sandbox_client) -> Client:
    # These tests are about callbacks, not the 24-hour window: no window for this account.
    sandbox_client.add_account(
        "whatsapp",
        account_sid=SID,
        auth_token=TOKEN,
        senders=[SENDER],
        session_window_hours=None,
    )
    sandbox_client.configure(callback_delay_ms=[5, 20])
    c = Client(SID, TOKEN)
    c.api.base_url = sandbox.url
    return c


def send(twilio: Client, receiver, number: str = "+15551230000") -> str:
    return twilio.messages.create(
        from_=SENDER, to="whatsapp:" + number, body="hi", status_callback=receiver.url
    ).sid


def statuses(calls) -> list[str]:
    return [c.form["MessageStatus"] for c in calls]


def hand_signature(url: str, params: dict[str, str]) -> str:
    payload = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(
        hmac.new(TOKEN.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()


def test_read_recipient_progresses_sent_delivered_read_each_validly_signed(
    twilio, receiver, sandbox_client
):
    sid = send(twilio, receiver, "+15005550005")
    planned = sandbox_client.callbacks("whatsapp")
    assert [(e["message_id"], e["events"]) for e in planned] == [
        (sid, ["sent"]),
        (sid, ["delivered"]),
        (sid, ["read"]),
    ]

    calls = receiver.take(3)
    assert statuses(calls) == ["sent", "delivered", "read"]
    validator = RequestValidator(TOKEN)
    for call in calls:
        signature = call.headers["X-Twilio-Signature"]
        # The signed URL is the StatusCallback exactly as given: host, port, path and query.
        assert validator.validate(receiver.url, call.form, signature)
        assert signature == hand_signature(receiver.url, call.form)
        assert not validator.validate(receiver.url.replace("org=7", "org=8"), call.form, signature)
        assert call.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        assert call.form["MessageSid"] == call.form["SmsSid"] == sid
        assert call.form["MessageStatus"] == call.form["SmsStatus"]
    assert calls[2].form["EventType"] == "READ"
    assert "EventType" not in calls[0].form
    assert twilio.messages(sid).fetch().status == "read"


def test_unknown_error_recipient_ends_undelivered_30008(twilio, receiver):
    sid = send(twilio, receiver, "+15005550006")

    sent, undelivered = receiver.take(2)
    assert statuses([sent, undelivered]) == ["sent", "undelivered"]
    assert undelivered.form["ErrorCode"] == "30008"
    assert undelivered.form["ChannelStatusMessage"] == "Unknown error"
    assert RequestValidator(TOKEN).validate(
        receiver.url, undelivered.form, undelivered.headers["X-Twilio-Signature"]
    )
    fetched = twilio.messages(sid).fetch()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30008)


def test_reordered_recipient_posts_read_before_delivered_before_sent(twilio, receiver):
    sid = send(twilio, receiver, "+15005550007")

    assert statuses(receiver.take(3)) == ["read", "delivered", "sent"]
    assert twilio.messages(sid).fetch().status == "read"


def test_duplicated_recipient_posts_every_callback_twice(twilio, receiver, sandbox_client):
    sid = send(twilio, receiver, "+15005550008")

    calls = receiver.take(6)
    assert statuses(calls) == ["sent", "sent", "delivered", "delivered", "read", "read"]
    assert calls[0].body == calls[1].body
    entries = [c for c in sandbox_client.callbacks("whatsapp") if c["message_id"] == sid]
    assert [e["duplicate"] for e in entries] == [False, True] * 3


def test_order_and_duplicates_can_be_forced_for_every_recipient(twilio, receiver, sandbox_client):
    sandbox_client.configure(callback_order="reversed", callback_duplicate_rate=1)
    send(twilio, receiver)

    assert statuses(receiver.take(4)) == ["delivered", "delivered", "sent", "sent"]


def test_receiver_5xx_is_retried_and_every_attempt_recorded(twilio, receiver, sandbox_client, poll):
    sandbox_client.configure(callback_retry_delay_ms=10)
    receiver.answers = [500, 503]
    sid = send(twilio, receiver, "+15005550003")

    calls = receiver.take(3)
    assert statuses(calls) == ["failed"] * 3
    assert len({c.headers["X-Twilio-Signature"] for c in calls}) == 1
    [entry] = poll(
        lambda: sandbox_client.callbacks("whatsapp"), lambda e: e and e[0]["outcome"] == "ok"
    )
    assert [a["status"] for a in entry["attempts"]] == [500, 503, 200]
    assert (entry["message_id"], entry["status"], entry["url"]) == (sid, 200, receiver.url)
    assert entry["params"]["ErrorCode"] == "63016"
    assert entry["headers"]["X-Twilio-Signature"] == entry["signature"]
    assert entry["body"] == calls[0].body.decode()


def test_a_4xx_answer_is_not_retried(twilio, receiver, sandbox_client, poll):
    receiver.answers = [403]
    send(twilio, receiver, "+15005550003")

    receiver.next()
    [entry] = poll(
        lambda: sandbox_client.callbacks("whatsapp"), lambda e: e and e[0]["status"] == 403
    )
    assert (entry["outcome"], len(entry["attempts"])) == ("http_403", 1)


def test_a_hanging_receiver_times_out_outside_the_send(twilio, receiver, sandbox_client, poll):
    sandbox_client.configure(callback_timeout_seconds=0.3, callback_retries=0)
    receiver.answers = [0]  # 0 = hold the request unanswered
    send(twilio, receiver, "+15005550003")
    returned_at = time.time()

    [entry] = poll(
        lambda: sandbox_client.callbacks("whatsapp"),
        lambda e: e and e[0]["outcome"] not in ("scheduled", "pending"),
    )
    assert entry["outcome"] == "error: TimeoutError"
    assert entry["attempts"][0]["time"] >= returned_at


def test_a_recorded_callback_can_be_replayed_byte_for_byte(twilio, receiver, sandbox_client):
    send(twilio, receiver, "+15005550003")
    original = receiver.next()
    [entry] = sandbox_client.callbacks("whatsapp")

    replayed = sandbox_client.replay_callback(entry["seq"])
    again = receiver.next()
    assert again.body == original.body
    assert again.headers["X-Twilio-Signature"] == original.headers["X-Twilio-Signature"]
    assert RequestValidator(TOKEN).validate(
        receiver.url, again.form, again.headers["X-Twilio-Signature"]
    )
    assert (replayed["duplicate"], replayed["message_id"]) == (True, entry["message_id"])
    with pytest.raises(SandboxError, match="404"):
        sandbox_client.replay_callback(10_000)
