"""Telegram Bot API adapter (plain requests; the bot token lives in the URL path)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError

from . import fields
from .base import (
    OutboundMessage,
    ProviderAdapter,
    ProviderError,
    retry_after_seconds,
    shared_session,
)
from .spec import ExtraField, MessageRules, ProviderSpec

_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")
# What @BotFather issues; connect refuses other shapes before storing them.
_BOTFATHER_TOKEN = re.compile(r"[0-9]{3,}:[A-Za-z0-9_-]{30,}")
_DEFAULT_RETRY_AFTER = 1.0


class TelegramBot(ProviderAdapter):
    """Sends text messages with a bot token to a chat id or @channel."""

    spec = ProviderSpec(
        slug="telegram",
        label="Telegram bot",
        vendor="Telegram",
        token_help="bot token `<id>:<secret>`",
        token_problem=lambda token: (
            ""
            if _BOTFATHER_TOKEN.fullmatch(token)
            else "Must be a Telegram bot token of the form <bot id>:<secret> from @BotFather."
        ),
        extra=(
            ExtraField(
                "chat_id",
                fields.chat_id,
                "integer or `@channel`; Settings test destination",
                test_destination=True,
            ),
            ExtraField("parse_mode", fields.one_of("MarkdownV2", "HTML", "Markdown"), "formatting"),
        ),
        base_url_setting="TELEGRAM_API_BASE",
        default_rate_per_second=30.0,
        messages=MessageRules(
            destination=fields.chat_id,
            destination_help="chat id (integer) or `@channel`",
            body_limit=4096,
            media_limit=1,
            media_text_limit=1024,
            parse_modes=("HTML", "MarkdownV2"),
        ),
    )

    def _configure(self) -> None:
        if not _TOKEN.fullmatch(self._token):
            raise self._error(
                "Telegram bot token is malformed (expected <bot id>:<secret>)", kind="credentials"
            )
        self.parse_mode = str(self.extra.get("parse_mode") or "")
        self._session = shared_session()

    def check(self) -> str:
        """Call getMe; return "Telegram bot @name", or raise ProviderError."""
        bot = self._call("getMe", {})
        return f"Telegram bot @{bot.get('username', bot.get('id'))}"

    def send(self, message: OutboundMessage) -> str:
        """Call sendMessage (sendPhoto / sendDocument by URL for media, the text as caption);
        return "<chat id>:<message id>", or raise ProviderError."""
        parse_mode = message.parse_mode or self.parse_mode
        if message.media_urls:
            url = message.media_urls[0]
            # Photos by URL: JPEG, PNG, WebP; everything else (GIF, PDF, ZIP) as a document.
            photo = fields.media_kind(url) == "image" and not _is_gif(url)
            method, field = ("sendPhoto", "photo") if photo else ("sendDocument", "document")
            payload: dict[str, Any] = {"chat_id": message.to, field: url}
            if message.body:
                payload["caption"] = message.body
        else:
            method, payload = "sendMessage", {"chat_id": message.to, "text": message.body}
        if parse_mode and (message.body or not message.media_urls):
            payload["parse_mode"] = parse_mode
        sent = self._call(method, payload)
        return f"{sent['chat']['id']}:{sent['message_id']}"

    def _secrets(self) -> list[str]:
        return [self._token, self._token.partition(":")[2]]

    def _url(self, method: str) -> str:
        return f"{self.base_url}/bot{self._token}/{method}"

    def _call(self, method: str, payload: dict[str, Any]) -> Any:
        # requests' exceptions (and their .request) carry the URL, hence the token: the
        # replacement error is raised outside the except block so it has no __context__.
        try:
            response = self._session.post(self._url(method), json=payload, timeout=self.timeout)
        except requests.Timeout:
            error = self._timeout_error()
        except requests.ConnectionError as exc:
            timed_out = bool(exc.args) and isinstance(exc.args[0], ReadTimeoutError)
            error = self._timeout_error() if timed_out else self._unreachable_error(exc)
        except requests.RequestException as exc:
            error = self._unreachable_error(exc)
        else:
            try:
                data = response.json()
            except ValueError:
                data = {}
            if response.ok and isinstance(data, dict) and data.get("ok"):
                return data.get("result")
            error = self._map_error(response.status_code, response.headers, data)
        raise error

    def _map_error(self, status: int, headers: Mapping[str, str], data: Any) -> ProviderError:
        if not isinstance(data, dict):
            data = {}
        code = data.get("error_code")
        if not isinstance(code, int):
            code = status
        description = str(data.get("description") or f"HTTP {status}")
        parameters = data.get("parameters") or {}
        detail = description.split(": ", 1)[-1]

        if code == 429:
            retry_after = parameters.get("retry_after")
            if retry_after is None:
                retry_after = retry_after_seconds(headers.get("Retry-After"), _DEFAULT_RETRY_AFTER)
            return self._error(
                f"Telegram is throttling this bot; retry after {float(retry_after):g} s",
                kind="rate_limited",
                code=code,
                retry_after=float(retry_after),
                status=status,
            )
        if code == 401:
            return self._error(
                "Telegram rejected the bot token (401 Unauthorized)",
                kind="credentials",
                code=code,
                status=status,
            )
        if code == 404:
            # Telegram 404: our method names are fixed, so the token path was not recognised.
            return self._error(
                "Telegram did not recognise the bot token (404 Not Found)",
                kind="credentials",
                code=code,
                status=status,
            )
        if "migrate_to_chat_id" in parameters:
            return self._error(
                "Telegram: the group was upgraded to a supergroup; "
                f"use chat id {parameters['migrate_to_chat_id']}",
                kind="permanent",
                code=code,
                status=status,
            )
        kind = "transient" if max(status, code) >= 500 else "permanent"
        return self._error(f"Telegram: {detail}", kind=kind, code=code, status=status)


def _is_gif(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(".gif")


_MARKDOWN_V2_RESERVED = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")


def escape_markdown_v2(text: str) -> str:
    """`text` safe to put in a MarkdownV2 message outside entities: each of
    _ * [ ] ( ) ~ ` > # + - = | { } . ! and \\ gets a preceding backslash."""
    return _MARKDOWN_V2_RESERVED.sub(r"\\\1", text)


def escape_html(text: str) -> str:
    """`text` safe to put in an HTML-mode message outside tags: & < > as entities."""
    return html.escape(text, quote=False)
