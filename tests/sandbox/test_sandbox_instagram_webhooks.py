"""Instagram webhooks from the sandbox: the hub.challenge handshake and signed receipts."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from sandbox.testing import SandboxError

TOKEN = "IGAA-webhook-test-token"
IG_ID = "17841400000000042"
SECRET = "meta-app-secret-0123456789"


@pytest.fixture
def instagram(sandbox, sandbox_client):
    sandbox_client.add_account("instagram", access_token=TOKEN, ig_id=IG_ID)
    sandbox_client.configure(callback_delay_ms=[5, 20])


@pytest.fixture
def subscribed(instagram, sandbox_client, receiver):
    result = sandbox_client.instagram_webhook(receiver.url, receiver.verify_token, SECRET)
    handshake = receiver.next()
    assert handshake.method == "GET"
    return result


def send(sandbox, recipient: str = "5550001") -> str:
    response = requests.post(
        f"{sandbox.url}/v23.0/me/messages",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"recipient": {"id": recipient}, "message": {"text": "hi"}},
        timeout=5,
    )
    assert response.status_code == 200
    return response.json()["message_id"]


def messaging(call) -> dict:
    body = json.loads(call.body)
    assert body["object"] == "instagram"
    [entry] = body["entry"]
    assert entry["id"] == IG_ID
    [item] = entry["messaging"]
    return item


def kind(call) -> str:
    item = messaging(call)
    return "read" if "read" in item else "delivery" if "delivery" in item else "?"


def test_subscribe_runs_the_handshake_with_the_verify_token(instagram, sandbox_client, receiver):
    result = sandbox_client.instagram_webhook(receiver.url, receiver.verify_token, SECRET)

    handshake = receiver.next()
    assert handshake.method == "GET"
    query = dict(parse_qsl(urlsplit(handshake.path).query))
    assert query["hub.mode"] == "subscribe"
    assert query["hub.verify_token"] == receiver.verify_token
    assert query["hub.challenge"].isdigit()
    assert query["org"] == "7"
    assert result["verified"] is True and result["callback_url"] == receiver.url
    assert "app_secret" not in result
    assert result["verification"]["response"] == query["hub.challenge"]


def test_a_callback_that_does_not_echo_the_challenge_is_not_subscribed(
    sandbox, instagram, sandbox_client, receiver
):
    with pytest.raises(SandboxError, match="400"):
        sandbox_client.instagram_webhook(receiver.url, "wrong-token", SECRET)

    assert receiver.next().method == "GET"
    [entry] = sandbox_client.callbacks("instagram")
    assert (entry["kind"], entry["outcome"], entry["status"]) == ("verification", "http_403", 403)
    send(sandbox)
    assert [e["kind"] for e in sandbox_client.callbacks("instagram")] == ["verification"]


def test_send_is_followed_by_signed_delivery_then_read(sandbox, subscribed, receiver):
    mid = send(sandbox, "5550001")

    delivery, read = receiver.take(2)
    for call in (delivery, read):
        expected = "sha256=" + hmac.new(SECRET.encode(), call.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(call.headers["X-Hub-Signature-256"], expected)
        assert call.headers["Content-Type"] == "application/json"
        item = messaging(call)
        assert item["sender"] == {"id": "5550001"}
        assert item["recipient"] == {"id": IG_ID}
        assert item["timestamp"] > 10**12  # milliseconds
    assert messaging(delivery)["delivery"] == {"mids": [mid]}
    assert messaging(read)["read"] == {"mid": mid}
    assert messaging(read)["timestamp"] >= messaging(delivery)["timestamp"]


def test_unread_recipient_gets_only_the_delivery(
    sandbox, subscribed, receiver, sandbox_client, poll
):
    mid = send(sandbox, "1001")

    assert kind(receiver.next()) == "delivery"
    entries = poll(
        lambda: sandbox_client.callbacks("instagram"),
        lambda e: any(x["message_id"] == mid and x["outcome"] == "ok" for x in e),
    )
    assert [e["events"] for e in entries if e["message_id"] == mid] == [["delivery"]]


def test_reordered_and_duplicated_recipients(sandbox, subscribed, receiver):
    send(sandbox, "1002")
    assert [kind(c) for c in receiver.take(2)] == ["read", "delivery"]

    send(sandbox, "1003")
    calls = receiver.take(4)
    assert [kind(c) for c in calls] == ["delivery", "delivery", "read", "read"]
    assert calls[0].body == calls[1].body


def test_5xx_is_retried_with_the_same_signed_body(
    sandbox, subscribed, receiver, sandbox_client, poll
):
    sandbox_client.configure(callback_retry_delay_ms=10)
    receiver.answers = [502]
    mid = send(sandbox, "1001")

    first, second = receiver.take(2)
    assert first.body == second.body
    assert first.headers["X-Hub-Signature-256"] == second.headers["X-Hub-Signature-256"]
    entries = poll(
        lambda: sandbox_client.callbacks("instagram"),
        lambda e: any(x["message_id"] == mid and x["outcome"] == "ok" for x in e),
    )
    [entry] = [e for e in entries if e["message_id"] == mid]
    assert [a["status"] for a in entry["attempts"]] == [502, 200]


def test_unsubscribe_stops_events(sandbox, subscribed, sandbox_client):
    requests.delete(sandbox.url + "/_sandbox/instagram/webhook", timeout=5).raise_for_status()
    state = requests.get(sandbox.url + "/_sandbox/instagram/webhook", timeout=5).json()
    assert state == {"callback_url": None, "verified": False}
    send(sandbox)
    assert [e["kind"] for e in sandbox_client.callbacks("instagram")] == ["verification"]
