"""The sandbox's Telegram Bot API: envelopes, magic chats, parse modes and flood control."""

from __future__ import annotations

import pytest
import requests

TOKEN = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789"


@pytest.fixture
def account(sandbox_client):
    return sandbox_client.add_account("telegram", token=TOKEN, bot_username="corbi_test_bot")


def call(sandbox, method: str, token: str = TOKEN, **kwargs) -> requests.Response:
    return requests.post(f"{sandbox.url}/bot{token}/{method}", timeout=5, **kwargs)


def test_get_me_returns_the_bot_user(sandbox, account):
    response = requests.get(f"{sandbox.url}/bot{TOKEN}/getMe", timeout=5)
    assert response.status_code == 200
    result = response.json()["result"]
    assert response.json()["ok"] is True
    assert (result["id"], result["is_bot"], result["username"]) == (123456, True, "corbi_test_bot")


@pytest.mark.parametrize("kwargs", [{"json": {"chat_id": 42, "text": "hi"}},
                                    {"data": {"chat_id": "42", "text": "hi"}},
                                    {"params": {"chat_id": "42", "text": "hi"}}])  # fmt: skip
def test_send_message_accepts_json_form_or_query(sandbox, account, kwargs):
    response = call(sandbox, "sendMessage", **kwargs)
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["chat"] == {
        "id": 42,
        "first_name": "Sandbox",
        "username": "user42",
        "type": "private",
    }
    assert (result["text"], result["message_id"], result["from"]["id"]) == ("hi", 1, 123456)


def test_method_names_are_case_insensitive(sandbox, account):
    assert call(sandbox, "SENDMESSAGE", json={"chat_id": 1, "text": "x"}).json()["ok"] is True
    assert call(sandbox, "getme").status_code == 200


def test_unknown_token_is_401_and_bad_paths_404(sandbox, account):
    assert call(sandbox, "getMe", token="999:nope").json() == {
        "ok": False,
        "error_code": 401,
        "description": "Unauthorized",
    }
    assert call(sandbox, "getMe", token="not-a-token").status_code == 404
    unknown = call(sandbox, "sendCarrierPigeon")
    assert (unknown.status_code, unknown.json()["description"]) == (404, "Not Found")


@pytest.mark.parametrize(
    ("params", "status", "description"),
    [
        ({"chat_id": 42, "text": ""}, 400, "Bad Request: message text is empty"),
        ({"chat_id": 42}, 400, "Bad Request: message text is empty"),
        ({"chat_id": 42, "text": "x" * 4097}, 400, "Bad Request: message is too long"),
        ({"text": "hi"}, 400, "Bad Request: chat_id is empty"),
        ({"chat_id": 404, "text": "hi"}, 400, "Bad Request: chat not found"),
        ({"chat_id": "nobody", "text": "hi"}, 400, "Bad Request: chat not found"),
        ({"chat_id": 403, "text": "hi"}, 403, "Forbidden: bot was blocked by the user"),
        ({"chat_id": 40301, "text": "hi"}, 403, "Forbidden: user is deactivated"),
        (
            {"chat_id": 42, "text": "hi", "parse_mode": "Fancy"},
            400,
            "Bad Request: unsupported parse_mode",
        ),
    ],
)
def test_send_message_errors_use_the_error_envelope(sandbox, account, params, status, description):
    response = call(sandbox, "sendMessage", json=params)
    assert response.status_code == status
    assert response.json() == {"ok": False, "error_code": status, "description": description}


def test_exactly_4096_chars_is_accepted(sandbox, account):
    assert call(sandbox, "sendMessage", json={"chat_id": 42, "text": "x" * 4096}).ok


def test_parse_mode_errors_are_cant_parse_entities(sandbox, account):
    html = call(sandbox, "sendMessage", json={"chat_id": 1, "text": "<b>hi", "parse_mode": "HTML"})
    assert html.json()["description"].startswith("Bad Request: can't parse entities:")
    md = call(
        sandbox, "sendMessage", json={"chat_id": 2, "text": "v1.2", "parse_mode": "MarkdownV2"}
    )
    assert md.status_code == 400
    assert "Character '.' is reserved" in md.json()["description"]
    ok = call(
        sandbox,
        "sendMessage",
        json={"chat_id": 3, "text": "v1\\.2 *b*", "parse_mode": "MarkdownV2"},
    )
    assert ok.ok


def test_group_upgrade_carries_migrate_to_chat_id(sandbox, account):
    body = call(sandbox, "sendMessage", json={"chat_id": -400, "text": "hi"}).json()
    assert body["parameters"] == {"migrate_to_chat_id": -1000000000400}


def test_second_message_to_a_chat_within_a_second_is_429(sandbox, sandbox_client, account):
    assert call(sandbox, "sendMessage", json={"chat_id": 42, "text": "one"}).ok
    response = call(sandbox, "sendMessage", json={"chat_id": 42, "text": "two"})

    assert response.status_code == 429
    body = response.json()
    assert body["parameters"]["retry_after"] >= 1
    assert isinstance(body["parameters"]["retry_after"], int)
    assert (
        body["description"] == f"Too Many Requests: retry after {body['parameters']['retry_after']}"
    )
    assert int(response.headers["Retry-After"]) == body["parameters"]["retry_after"]
    assert call(sandbox, "sendMessage", json={"chat_id": 43, "text": "other chat"}).ok
    assert sandbox_client.requests("telegram")[1]["outcome"] == "rate_limited"


def test_bot_rate_is_configurable(sandbox, sandbox_client, account):
    sandbox_client.configure(telegram_bot_rate=2, telegram_chat_rate=100)
    results = [call(sandbox, "sendMessage", json={"chat_id": i, "text": "x"}).status_code
               for i in range(1, 4)]  # fmt: skip
    assert results == [200, 200, 429]


def test_group_chats_allow_twenty_per_minute(sandbox, sandbox_client, account):
    sandbox_client.configure(telegram_chat_rate=1_000_000, telegram_group_per_minute=3)
    results = [call(sandbox, "sendMessage", json={"chat_id": -100123, "text": "x"})
               for _ in range(4)]  # fmt: skip
    assert [r.status_code for r in results] == [200, 200, 200, 429]
    assert results[-1].json()["parameters"]["retry_after"] >= 1
    assert results[0].json()["result"]["chat"]["type"] == "supergroup"


def test_fault_429_uses_retry_after(sandbox, sandbox_client, account):
    sandbox_client.fault("telegram", status=429, retry_after=7, count=1)
    response = call(sandbox, "sendMessage", json={"chat_id": 42, "text": "hi"})
    assert response.status_code == 429
    assert response.json()["parameters"] == {"retry_after": 7}
