"""TelegramBot against the sandbox's Bot API; the bot token must never reach an error."""

from __future__ import annotations

import logging
import socket

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.telegram import TelegramBot

TOKEN = "123456:CANARYtgTOKENzq7Xw9vL2mN4pR6sT8uYb3"
SECRET = TOKEN.partition(":")[2]
CHAT = "4242"
DEBUG_LOGGERS = ("urllib3", "httpx", "twilio", "python_http_client", "googleapiclient", "")


@pytest.fixture
def account(sandbox_client):
    sandbox_client.add_account("telegram", token=TOKEN, bot_username="corbi_test_bot")


def adapter(base_url: str, *, token: str = TOKEN, timeout: float = 5.0, **extra) -> TelegramBot:
    return TelegramBot(token=token, extra=extra, base_url=base_url, timeout=timeout)


def send_error(provider: TelegramBot, to: str = CHAT) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        provider.send(OutboundMessage(to=to, body="hello"))
    return caught.value


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_telegram_check_names_the_bot(sandbox_url, account):
    assert adapter(sandbox_url).check() == "Telegram bot @corbi_test_bot"


def test_telegram_send_returns_chat_and_message_id(sandbox_url, sandbox_client, account):
    message_id = adapter(sandbox_url, parse_mode="HTML").send(
        OutboundMessage(to=CHAT, body="<b>hi</b>")
    )

    chat, _, number = message_id.partition(":")
    assert chat == CHAT
    assert number.isdigit()
    sent = sandbox_client.requests("telegram")[-1]
    assert sent["path"].endswith("/sendMessage")
    assert sent["body"] == {"chat_id": CHAT, "text": "<b>hi</b>", "parse_mode": "HTML"}


def test_telegram_wrong_token_is_credentials_rejected(sandbox_url, account):
    err = send_error(adapter(sandbox_url, token="999:CANARYwrongTOKENzq7Xw9vL2mN4pR6s"))
    assert err.kind == "credentials"
    assert err.status == 401


def test_telegram_chat_not_found_is_permanent(sandbox_url, account):
    err = send_error(adapter(sandbox_url), to="404")
    assert err.kind == "permanent"
    assert str(err) == "Telegram: chat not found"


def test_telegram_blocked_bot_is_permanent(sandbox_url, account):
    err = send_error(adapter(sandbox_url), to="403")
    assert err.kind == "permanent"
    assert err.status == 403
    assert "blocked" in str(err)


def test_telegram_second_message_to_a_chat_within_a_second_is_throttled(sandbox_url, account):
    provider = adapter(sandbox_url)
    provider.send(OutboundMessage(to=CHAT, body="first"))
    err = send_error(provider)
    assert err.rate_limited
    assert err.retry_after is not None and err.retry_after >= 1


def test_telegram_429_waits_retry_after(sandbox_url, sandbox_client, account):
    sandbox_client.fault("telegram", mode="status", status=429, retry_after=7, count=1)
    err = send_error(adapter(sandbox_url))
    assert err.rate_limited
    assert err.retry_after == 7


def test_telegram_500_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("telegram", mode="status", status=500, count=1)
    assert send_error(adapter(sandbox_url)).kind == "transient"


def test_telegram_timeout_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("telegram", mode="timeout", count=1)
    err = send_error(adapter(sandbox_url, timeout=0.5))
    assert err.kind == "transient"
    assert str(err) == "Telegram did not answer within 0.5 s"


def test_telegram_unreachable_api_is_transient():
    err = send_error(adapter(closed_port_url(), timeout=2))
    assert err.kind == "transient"
    assert str(err) == "Telegram could not be reached (ConnectionError)"


def test_telegram_token_never_reaches_an_error(
    sandbox_url, sandbox_client, account, caplog, assert_secret_free
):
    for name in DEBUG_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    errors: list[ProviderError] = [send_error(adapter(closed_port_url(), timeout=2))]
    sandbox_client.fault("telegram", mode="timeout", count=1)
    errors.append(send_error(adapter(sandbox_url, timeout=0.5)))
    for status in (401, 404, 429, 500, 502):
        sandbox_client.fault("telegram", mode="status", status=status, count=1)
        errors.append(send_error(adapter(sandbox_url)))
    errors += [send_error(adapter(sandbox_url), to=chat) for chat in ("404", "403")]
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url, token="123456:CANARYtgTOKENzq7Xw9vL2mN4pR6sT8uYbX").check()
    errors.append(caught.value)

    assert len({err.kind for err in errors}) >= 3
    for err in errors:
        assert_secret_free(err, TOKEN)
    # urllib3 logs request lines with the URL path: scrubbing those is the logging filter's job.
    ours = [r for r in caplog.records if not r.name.startswith("urllib3")]
    assert not [r for r in ours if SECRET[:8] in r.getMessage()]


def test_telegram_upgraded_group_names_the_new_chat_id(sandbox_url, account):
    err = send_error(adapter(sandbox_url), to="-400")
    assert err.kind == "permanent"
    assert "-1000000000400" in str(err)


@pytest.mark.parametrize("chat", ["40301", "-403"])
def test_telegram_deactivated_user_or_kicked_bot_is_permanent(sandbox_url, account, chat):
    err = send_error(adapter(sandbox_url), to=chat)
    assert err.kind == "permanent"
    assert err.status == 403


def test_telegram_send_to_a_channel_username(sandbox_url, account):
    message_id = adapter(sandbox_url).send(OutboundMessage(to="@corbi_news", body="hi"))
    assert message_id.startswith("-100")
