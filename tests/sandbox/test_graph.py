"""The sandbox's Instagram Graph API messaging, driven with plain requests."""

from __future__ import annotations

import json

import pytest
import requests

TOKEN = "IGAAsandboxTOKEN0123456789"
IG_ID = "17841400000000000"
USER = "1234567890"


@pytest.fixture
def account(sandbox_client):
    return sandbox_client.add_account(
        "instagram", access_token=TOKEN, ig_id=IG_ID, username="corbi.test"
    )


def send(sandbox, recipient: str = USER, text: str = "hi", token: str = TOKEN, node: str = IG_ID):
    return requests.post(
        f"{sandbox.url}/v23.0/{node}/messages",
        headers={"Authorization": f"Bearer {token}"},
        json={"recipient": {"id": recipient}, "message": {"text": text}},
        timeout=5,
    )


def test_me_returns_requested_fields(sandbox, account):
    response = requests.get(
        f"{sandbox.url}/v21.0/me",
        params={"fields": "user_id,username"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json() == {"user_id": IG_ID, "username": "corbi.test", "id": IG_ID}


def test_node_lookup_accepts_access_token_query(sandbox, account):
    response = requests.get(
        f"{sandbox.url}/v19.0/{IG_ID}",
        params={"fields": "id,username", "access_token": TOKEN},
        timeout=5,
    )
    assert response.json() == {"id": IG_ID, "username": "corbi.test"}


def test_send_returns_recipient_and_message_id(sandbox, sandbox_client, account):
    for node in (IG_ID, "me"):
        response = send(sandbox, node=node)
        assert response.status_code == 200
        body = response.json()
        assert body["recipient_id"] == USER
        assert body["message_id"].startswith("aWdf")
    assert sandbox_client.requests("instagram")[-1]["message_id"] == body["message_id"]


def test_bad_token_is_190_oauth_exception(sandbox, account):
    response = send(sandbox, token="IGAAwrong")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (190, "OAuthException")
    assert error["fbtrace_id"]


@pytest.mark.parametrize(
    ("recipient", "code", "subcode"),
    [("551", 551, 1545041), ("100", 100, 2018001), ("10", 10, 2018278)],
)
def test_magic_recipients(sandbox, account, recipient, code, subcode):
    response = send(sandbox, recipient=recipient)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["error_subcode"]) == (code, subcode)
    assert error["message"].startswith(f"(#{code})")


def test_text_of_1000_chars_is_invalid_parameter(sandbox, account):
    assert send(sandbox, text="x" * 999).status_code == 200
    error = send(sandbox, text="x" * 1000).json()["error"]
    assert error["code"] == 100
    assert "error_subcode" not in error


def test_another_accounts_node_is_unsupported(sandbox, account):
    error = send(sandbox, node="999").json()["error"]
    assert (error["code"], error["error_subcode"]) == (100, 33)


def test_account_over_its_rate_gets_80002_with_usage_header(sandbox, sandbox_client):
    sandbox_client.add_account("instagram", access_token=TOKEN, ig_id=IG_ID, rate_per_second=1)
    assert send(sandbox).status_code == 200
    response = send(sandbox)

    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["is_transient"]) == (80002, True)
    usage = json.loads(response.headers["X-Business-Use-Case-Usage"])
    assert usage[IG_ID][0]["estimated_time_to_regain_access"] >= 1


def test_fault_500_is_transient_code_2(sandbox, sandbox_client, account):
    sandbox_client.fault("instagram", status=500, count=1)
    response = send(sandbox)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == 2
    assert response.json()["error"]["is_transient"] is True
    assert send(sandbox).status_code == 200


def test_fault_429_is_code_4(sandbox, sandbox_client, account):
    sandbox_client.fault("instagram", status=429, retry_after=120, count=1)
    response = send(sandbox)
    assert response.json()["error"]["code"] == 4
    usage = json.loads(response.headers["X-Business-Use-Case-Usage"])
    assert next(iter(usage.values()))[0]["estimated_time_to_regain_access"] == 2
