"""TelegramBot against the sandbox's Bot API; the bot token must never reach an error."""

from __future__ import annotations

import logging
import socket

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.telegram import TelegramBot
from tests.shared.providers.helpers import Answer, Mapped, assert_mapped, base_url, provoke

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


WRONG = "999:CANARYwrongTOKENzq7Xw9vL2mN4pR6s"

# How the sandbox answers -> the ProviderError the adapter must raise.
ERRORS = [
    pytest.param(
        Answer(token=WRONG),
        Mapped("credentials", "401", status=401, says="Telegram rejected the bot token"),
        id="unknown-token-401",
    ),
    pytest.param(
        Answer(fault={"status": 404}),
        Mapped("credentials", "404", status=404, says="did not recognise the bot token"),
        id="http-404-unrecognised-token",
    ),
    pytest.param(
        Answer(to="404"),
        Mapped("permanent", "400", status=400, says="Telegram: chat not found"),
        id="chat-not-found",
    ),
    pytest.param(
        Answer(to="403"),
        Mapped("permanent", "403", status=403, says="blocked"),
        id="bot-blocked-by-user-403",
    ),
    pytest.param(
        Answer(to="40301"),
        Mapped("permanent", "403", status=403),
        id="user-deactivated-403",
    ),
    pytest.param(
        Answer(to="-403"),
        Mapped("permanent", "403", status=403),
        id="bot-kicked-from-group-403",
    ),
    pytest.param(
        Answer(to="-400"),
        Mapped("permanent", "400", status=400, says="use chat id -1000000000400"),
        id="group-upgraded-names-the-new-chat-id",
    ),
    pytest.param(
        Answer(second=True),
        Mapped("rate_limited", "429", retry_after=(1, 2), status=429),
        id="second-message-to-a-chat-within-a-second",
    ),
    pytest.param(
        Answer(fault={"status": 429, "retry_after": 7}),
        Mapped("rate_limited", "429", retry_after=7, status=429),
        id="http-429-retry-after",
    ),
    pytest.param(
        Answer(fault={"status": 500}),
        Mapped("transient", "500", status=500),
        id="http-500",
    ),
    pytest.param(
        Answer(fault={"status": 502}),
        Mapped("transient", "502", status=502),
        id="http-502",
    ),
    pytest.param(
        Answer(fault={"mode": "timeout"}),
        Mapped("transient", says="Telegram did not answer within 0.5 s"),
        id="timeout",
    ),
    pytest.param(
        Answer(unreachable=True),
        Mapped("transient", says="Telegram could not be reached (ConnectionError)"),
        id="unreachable",
    ),
]


@pytest.mark.parametrize(("answer", "mapped"), ERRORS)
def test_telegram_maps_each_provider_answer_to_one_error(
    sandbox_url, sandbox_client, assert_secret_free, answer, mapped
):
    token = answer.token or TOKEN
    provider = adapter(base_url(sandbox_url, answer), token=token, timeout=answer.timeout)
    message = OutboundMessage(to=answer.to or CHAT, body="hello")
    account = {"token": TOKEN, "bot_username": "corbi_test_bot"}
    err = provoke(
        sandbox_client, "telegram", answer, account, provider, lambda: provider.send(message)
    )
    assert_mapped(err, mapped, assert_secret_free, [token])


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


def test_telegram_send_to_a_channel_username(sandbox_url, account):
    message_id = adapter(sandbox_url).send(OutboundMessage(to="@corbi_news", body="hi"))
    assert message_id.startswith("-100")


@pytest.mark.parametrize(
    ("url", "method", "field"),
    [
        ("https://cdn.example.com/a.JPG", "sendPhoto", "photo"),
        ("https://cdn.example.com/a.png?size=2", "sendPhoto", "photo"),
        ("https://cdn.example.com/a.gif", "sendDocument", "document"),
        ("https://cdn.example.com/invoice.pdf", "sendDocument", "document"),
    ],
)
def test_telegram_media_by_url_picks_photo_or_document(
    sandbox_url, sandbox_client, account, url, method, field
):
    message = OutboundMessage(to=CHAT, body="<b>Hi</b>", media_urls=(url,), parse_mode="HTML")
    assert adapter(sandbox_url).send(message).startswith(f"{CHAT}:")

    sent = sandbox_client.requests("telegram")[-1]
    assert sent["path"].endswith(f"/{method}")
    assert sent["body"][field] == url
    assert (sent["body"]["caption"], sent["body"]["parse_mode"]) == ("<b>Hi</b>", "HTML")


def test_telegram_per_message_parse_mode_wins_over_the_integrations(
    sandbox_url, sandbox_client, account
):
    bot = adapter(sandbox_url, parse_mode="HTML")
    bot.send(OutboundMessage(to=CHAT, body="*hi*", parse_mode="MarkdownV2"))
    bot.send(OutboundMessage(to="4243", body="<b>hi</b>"))  # another chat: 1 msg/s per chat

    modes = [r["body"]["parse_mode"] for r in sandbox_client.requests("telegram")[-2:]]
    assert modes == ["MarkdownV2", "HTML"]


def test_telegram_media_it_cannot_fetch_is_a_permanent_error(sandbox_url, account):
    message = OutboundMessage(to=CHAT, body="", media_urls=("https://cdn.example.com/404/a.png",))
    with pytest.raises(ProviderError) as caught:
        adapter(sandbox_url).send(message)

    assert caught.value.kind == "permanent"
    assert "failed to get HTTP URL content" in str(caught.value)


def test_escape_helpers_make_text_safe_for_each_parse_mode(sandbox_url, sandbox_client, account):
    from shared.providers.telegram import escape_html, escape_markdown_v2

    raw = "1.5-2 (approx) a_b *c* [d] <e> & f!"
    bot = adapter(sandbox_url)
    bot.send(OutboundMessage(to=CHAT, body=escape_markdown_v2(raw), parse_mode="MarkdownV2"))
    bot.send(OutboundMessage(to="4243", body=escape_html(raw), parse_mode="HTML"))

    assert escape_markdown_v2("1.5-2 (approx)") == "1\\.5\\-2 \\(approx\\)"
    assert escape_html("<b> & </b>") == "&lt;b&gt; &amp; &lt;/b&gt;"
