"""Telegram Bot API simulator: /bot<token>/getMe, sendMessage, sendPhoto and sendDocument with
flood control."""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
import time
import zlib
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from sandbox.common import json_response, outcome, override_response, state_of
from sandbox.control import echo_request
from sandbox.state import State, TokenBucket, acquire, retry_after_seconds

SLUG = "telegram"
MAX_TEXT = 4096
MAX_CAPTION = 1024

_WRONG_FILE = "Bad Request: wrong file identifier/HTTP URL specified"
_FILE_ID = re.compile(r"[A-Za-z0-9_-]{20,}")
_DOCUMENT_URL_TYPES = {".gif": "image/gif", ".pdf": "application/pdf", ".zip": "application/zip"}
_NOT_A_PAGE_OF_MEDIA = (".html", ".htm")
_PHOTO_SIZES = ((90, 51), (320, 180), (800, 450), (1280, 720))

_PATH = re.compile(r"/bot(\d+:[A-Za-z0-9_-]+)/([A-Za-z0-9_]+)/?")
_HTML_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
    "a", "code", "pre", "blockquote", "tg-emoji",
}  # fmt: skip
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^>]*)>")
_MDV2_ALWAYS_RESERVED = set("#+-={}.!")

# Magic chat ids -> (error_code, description, parameters)
MAGIC_CHATS: dict[int, tuple[int, str, dict[str, Any] | None]] = {
    404: (400, "Bad Request: chat not found", None),
    403: (403, "Forbidden: bot was blocked by the user", None),
    40301: (403, "Forbidden: user is deactivated", None),
    -403: (403, "Forbidden: bot was kicked from the group chat", None),
    -400: (
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        {"migrate_to_chat_id": -1000000000400},
    ),
}

_FAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error(
    code: int,
    description: str,
    parameters: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return json_response(body, code, headers)


def too_many(retry_after: int) -> web.Response:
    return error(
        429,
        f"Too Many Requests: retry after {retry_after}",
        {"retry_after": retry_after},
        {"Retry-After": str(retry_after)},
    )


def fault_response(
    request: web.Request, status: int, retry_after: float | None, body: Any
) -> web.Response:
    if body is not None:
        return override_response(echo_request(request, body), status)
    if status == 429:
        return too_many(retry_after_seconds(retry_after or 1))
    return error(status, _FAULT_DESCRIPTIONS.get(status, "Error"))


def _bot_user(account: dict[str, Any], full: bool) -> dict[str, Any]:
    user: dict[str, Any] = {
        "id": int(account["token"].split(":", 1)[0]),
        "is_bot": True,
        "first_name": account["first_name"],
        "username": account["bot_username"],
    }
    if full:
        user.update(
            can_join_groups=True,
            can_read_all_group_messages=False,
            supports_inline_queries=False,
            can_connect_to_business=False,
            has_main_web_app=False,
        )
    return user


def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request["query"])
    body = request["body"]
    if isinstance(body, dict):
        params.update(body)
    return params


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    match = _PATH.fullmatch(request.path)
    if match is None:
        outcome(request, "not_found")
        return error(404, "Not Found")
    token, method = match.groups()
    account = state.accounts[SLUG].get(token)
    if account is None:
        outcome(request, "auth_failed")
        return error(401, "Unauthorized")
    method = method.lower()
    if method == "getme":
        outcome(request, "getme")
        return json_response({"ok": True, "result": _bot_user(account, full=True)})
    if method == "sendmessage":
        return _send_message(state, request, account, _params(request))
    if method in ("sendphoto", "senddocument"):
        return _send_media(state, request, account, _params(request), method[4:])
    outcome(request, "not_found")
    return error(404, "Not Found")


def _chat(chat_id: Any) -> tuple[int | str, dict[str, Any]] | None:
    """(bucket key, chat object) for a chat_id parameter, or None if it cannot exist."""
    if isinstance(chat_id, bool):
        return None
    if isinstance(chat_id, str) and chat_id.startswith("@") and len(chat_id) > 1:
        name = chat_id[1:]
        cid = -1000000000000 - zlib.crc32(name.encode())
        return cid, {"id": cid, "title": name, "username": name, "type": "channel"}
    try:
        cid = int(chat_id)
    except (TypeError, ValueError):
        return None
    if cid > 0:
        return cid, {
            "id": cid,
            "first_name": "Sandbox",
            "username": f"user{cid}",
            "type": "private",
        }
    if cid == 0:
        return None
    kind = "supergroup" if str(cid).startswith("-100") else "group"
    return cid, {"id": cid, "title": f"Sandbox {kind} {-cid}", "type": kind}


def _entities_error(text: str, parse_mode: str) -> str | None:
    mode = parse_mode.lower()
    if mode == "html":
        stack: list[str] = []
        for m in _TAG.finditer(text):
            closing, name = m.group(1), m.group(2).lower()
            offset = len(text[: m.start()].encode())
            if name not in _HTML_TAGS:
                kind = "end" if closing else "start"
                return f'Unsupported {kind} tag "{name}" at byte offset {offset}'
            if not closing:
                stack.append(name)
            elif not stack:
                return f"Unexpected end tag at byte offset {offset}"
            elif stack[-1] != name:
                return (
                    f"Unmatched end tag at byte offset {offset}, "
                    f'expected "</{stack[-1]}>", found "</{name}>"'
                )
            else:
                stack.pop()
        if stack:
            return f'Can\'t find end tag corresponding to start tag "{stack[-1]}"'
    elif mode == "markdownv2":
        in_code = False
        escaped = False
        for i, ch in enumerate(text):
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == "`":
                in_code = not in_code
            elif not in_code and (
                ch in _MDV2_ALWAYS_RESERVED or (ch == ">" and i > 0 and text[i - 1] != "\n")
            ):
                return f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
    return None


def _visible_text(text: str, parse_mode: str | None) -> str:
    if parse_mode and parse_mode.lower() == "html":
        return re.sub(r"<[^>]+>", "", text)
    return text


def _send_message(
    state: State, request: web.Request, account: dict[str, Any], params: dict[str, Any]
) -> web.Response:
    def reject(code: int, description: str, label: str) -> web.Response:
        outcome(request, label)
        return error(code, description)

    chat_id = params.get("chat_id")
    if chat_id is None or chat_id == "":
        return reject(400, "Bad Request: chat_id is empty", "invalid_request")
    text = params.get("text")
    text = "" if text is None else str(text)
    parse_mode = params.get("parse_mode")
    if parse_mode and str(parse_mode).lower() not in ("html", "markdown", "markdownv2"):
        return reject(400, "Bad Request: unsupported parse_mode", "invalid_request")
    if not text.strip():
        return reject(400, "Bad Request: message text is empty", "empty_text")
    if parse_mode:
        problem = _entities_error(text, str(parse_mode))
        if problem:
            return reject(400, f"Bad Request: can't parse entities: {problem}", "invalid_entities")
    if len(_visible_text(text, parse_mode)) > MAX_TEXT:
        return reject(400, "Bad Request: message is too long", "too_long")
    return _deliver(state, request, account, chat_id, {"text": _visible_text(text, parse_mode)})


def _send_media(
    state: State,
    request: web.Request,
    account: dict[str, Any],
    params: dict[str, Any],
    kind: str,
) -> web.Response:
    """sendPhoto / sendDocument with a file_id the sandbox issued or an http(s) URL."""

    def reject(description: str, label: str = "invalid_request") -> web.Response:
        outcome(request, label)
        return error(400, description)

    chat_id = params.get("chat_id")
    if chat_id is None or chat_id == "":
        return reject("Bad Request: chat_id is empty")
    source = params.get(kind)
    if not isinstance(source, str) or not source.strip():
        return reject(f"Bad Request: there is no {kind} in the request")
    caption = params.get("caption")
    caption = "" if caption is None else str(caption)
    parse_mode = params.get("parse_mode")
    if parse_mode and str(parse_mode).lower() not in ("html", "markdown", "markdownv2"):
        return reject("Bad Request: unsupported parse_mode")
    if parse_mode and caption:
        problem = _entities_error(caption, str(parse_mode))
        if problem:
            return reject(f"Bad Request: can't parse entities: {problem}", "invalid_entities")
    visible = _visible_text(caption, parse_mode)
    if len(visible) > MAX_CAPTION:
        return reject("Bad Request: message caption is too long", "too_long")
    media = _media(state, kind, source.strip())
    if isinstance(media, str):
        return reject(media, "invalid_media")
    content: dict[str, Any] = {kind: media}
    if visible:
        content["caption"] = visible
    return _deliver(state, request, account, chat_id, content)


def _media(state: State, kind: str, source: str) -> Any:
    """The `photo` sizes or `document` object for a source, or the Bad Request description."""
    parts = urlsplit(source)
    if parts.scheme.lower() not in ("http", "https"):
        known = state.telegram_files.get(source)
        if known is None or not _FILE_ID.fullmatch(source):
            return _WRONG_FILE
        if known["kind"] != kind:
            return f"Bad Request: can't use file of type {known['kind'].title()} as {kind.title()}"
        return known["media"]
    if not parts.netloc:
        return _WRONG_FILE
    path = unquote(parts.path)
    extension = posixpath.splitext(path)[1].lower()
    if "/404" in path:
        return "Bad Request: failed to get HTTP URL content"
    if extension in _NOT_A_PAGE_OF_MEDIA:
        return "Bad Request: wrong type of the web page content"
    if kind == "document" and extension not in _DOCUMENT_URL_TYPES:
        return _WRONG_FILE
    # Telegram caches what it fetched from a URL, so the same URL gives the same file ids.
    digest = hashlib.sha256(source.encode()).digest()
    if kind == "photo":
        media: Any = [
            {**_file_ids("AgACAgQAAxkBAAI", hashlib.sha256(digest + bytes([i])).digest()), "width": w, "height": h,
             "file_size": w * h // 8}
            for i, (w, h) in enumerate(_PHOTO_SIZES)
        ]  # fmt: skip
        file_id = media[-1]["file_id"]
    else:
        media = {
            **_file_ids("BQACAgQAAxkBAAI", digest),
            "file_name": posixpath.basename(path) or "document" + extension,
            "mime_type": _DOCUMENT_URL_TYPES[extension],
            "file_size": 1024 + digest[0] * 64,
        }
        file_id = media["file_id"]
    entry = {"kind": kind, "media": media}
    state.telegram_files[file_id] = entry
    if kind == "photo":
        for size in media:
            state.telegram_files[size["file_id"]] = entry
    return media


def _file_ids(prefix: str, digest: bytes) -> dict[str, str]:
    token = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return {"file_id": prefix + token[:40], "file_unique_id": "AQAD" + token[:12]}


def _deliver(
    state: State,
    request: web.Request,
    account: dict[str, Any],
    chat_id: Any,
    content: dict[str, Any],
) -> web.Response:
    """The part every send shares: the chat, the magic chats, flood control, the Message."""
    chat = _chat(chat_id)
    if chat is None:
        outcome(request, "chat_not_found")
        return error(400, "Bad Request: chat not found")
    key, chat_obj = chat
    magic = MAGIC_CHATS.get(key) if isinstance(key, int) else None
    if magic is not None:
        code, description, parameters = magic
        outcome(request, "rejected")
        return error(code, description, parameters)

    cfg = state.config
    buckets: list[TokenBucket] = [
        state.bucket((SLUG, "bot", account["token"]), cfg["telegram_bot_rate"]),
        state.bucket(
            (SLUG, "chat", account["token"], key), cfg["telegram_chat_rate"], capacity=1.0
        ),
    ]
    if isinstance(key, int) and key < 0:
        per_minute = cfg["telegram_group_per_minute"]
        buckets.append(
            state.bucket(
                (SLUG, "group", account["token"], key), per_minute / 60.0, capacity=per_minute
            )
        )
    wait = acquire(buckets)
    if wait:
        outcome(request, "rate_limited")
        return too_many(retry_after_seconds(wait))

    counter_key = (account["token"], str(key))
    message_id = state.telegram_message_ids.get(counter_key, 0) + 1
    state.telegram_message_ids[counter_key] = message_id
    result: dict[str, Any] = {
        "message_id": message_id,
        "from": _bot_user(account, full=False),
        "chat": chat_obj,
        "date": int(time.time()),
        **content,
    }
    outcome(request, "sent", f"{key}:{message_id}")
    return json_response({"ok": True, "result": result})
