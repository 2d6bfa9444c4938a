"""Instagram messaging via the Meta Graph API: /v{N}/me, /v{N}/{ig-id}, /v{N}/{id}/messages."""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sandbox import instagram_oauth, meta_webhooks
from sandbox.common import bearer_token, json_response, outcome, override_response, state_of
from sandbox.control import echo_request
from sandbox.state import acquire

SLUG = "instagram"
MAX_TEXT = 1000
ATTACHMENT_TYPES = ("image", "video", "audio", "file")
HUMAN_AGENT_HOURS = 7 * 24

_PATH = re.compile(r"/(v\d+\.\d+)/([^/]+)(?:/([^/]+))?/?")
_USER_FIELDS = {"id", "user_id", "username", "name", "account_type", "profile_picture_url"}

# Magic recipient ids -> (code, subcode, message)
MAGIC_RECIPIENTS: dict[str, tuple[int, int | None, str]] = {
    "551": (551, 1545041, "(#551) This person isn't available right now."),
    "100": (100, 2018001, "(#100) No matching user found"),
    "10": (10, 2018278, "(#10) This message is sent outside of allowed window."),
}


def error(
    message: str,
    code: int,
    *,
    status: int = 400,
    subcode: int | None = None,
    type_: str = "OAuthException",
    transient: bool | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    err: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        err["error_subcode"] = subcode
    if transient is not None:
        err["is_transient"] = transient
    err["fbtrace_id"] = _fbtrace()
    return json_response({"error": err}, status, headers)


def _fbtrace() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(8)).rstrip(b"=").decode()


def fault_response(
    request: web.Request, status: int, retry_after: float | None, body: Any
) -> web.Response:
    headers = None
    if retry_after is not None:
        account = state_of(request).accounts[SLUG].get(_token(request) or "")
        ig_id = account["ig_id"] if account else "0"
        headers = {"X-Business-Use-Case-Usage": _usage_header(ig_id, 100, retry_after)}
    if body is not None:
        return override_response(echo_request(request, body), status, headers)
    if status == 429:
        return error(
            "(#4) Application request limit reached", 4, status=status, transient=True,
            headers=headers,
        )  # fmt: skip
    if status >= 500:
        return error(
            "An unexpected error has occurred. Please retry your request later.",
            2,
            status=status,
            transient=True,
        )
    if status == 401:
        return error("Invalid OAuth access token - Cannot parse access token", 190, status=401)
    if status == 403:
        return error("(#200) Permissions error", 200, status=403)
    return error("(#100) Invalid parameter", 100, status=status)


def _usage_header(ig_id: str, percent: int, regain_seconds: float) -> str:
    minutes = math.ceil(regain_seconds / 60) if regain_seconds > 0 else 0
    usage = {
        "type": "instagram",
        "call_count": percent,
        "total_cputime": min(percent, 100),
        "total_time": min(percent, 100),
        "estimated_time_to_regain_access": minutes,
    }
    return json.dumps({ig_id: [usage]}, separators=(",", ":"))


def _token(request: web.Request) -> str | None:
    token = bearer_token(request)
    if token:
        return token
    body = request["body"]
    if isinstance(body, dict) and isinstance(body.get("access_token"), str):
        return body["access_token"]
    value = request["query"].get("access_token")
    return value if isinstance(value, str) and value else None


def _unsupported(method: str, node: str) -> web.Response:
    return error(
        f"Unsupported {method} request. Object with ID '{node}' does not exist, cannot be loaded "
        "due to missing permissions, or does not support this operation. Please read the Graph "
        "API documentation at https://developers.facebook.com/docs/graph-api",
        100,
        subcode=33,
        type_="GraphMethodException",
    )


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    match = _PATH.fullmatch(request.path)
    if match is None:
        outcome(request, "not_found")
        return error("Unknown path components: " + request.path, 2500)
    _, node, edge = match.groups()
    token = _token(request)
    if token is None:
        outcome(request, "auth_failed")
        return error(
            "An active access token must be used to query information about the current user.",
            2500,
        )
    account = state.accounts[SLUG].get(token) or instagram_oauth.graph_account(state, token)
    if account is None:
        outcome(request, "auth_failed")
        return error("Invalid OAuth access token - Cannot parse access token", 190)
    ig_id = account["ig_id"]
    known = node in ("me", ig_id) or (account["page_id"] is not None and node == account["page_id"])
    if edge == "permissions" and request.method == "DELETE" and known:
        # Meta's permission delete: the app loses the account's tokens (OAuth-issued ones).
        revoked = instagram_oauth.revoke(state, token)
        outcome(request, "revoked" if revoked else "not_revocable")
        return json_response({"success": True})
    if edge is not None and edge != "messages":
        outcome(request, "not_found")
        return error(f"Unknown path components: /{edge}", 2500)

    usage_headers = {"X-Business-Use-Case-Usage": _usage_header(ig_id, 1, 0)}
    bucket = state.account_bucket(SLUG, token, account)
    if bucket is not None:
        wait = acquire([bucket])
        if wait:
            outcome(request, "rate_limited")
            return error(
                "There have been too many calls to this Instagram account. "
                "Wait a bit and try again.",
                80002,
                status=403,
                subcode=2207051,
                transient=True,
                headers={"X-Business-Use-Case-Usage": _usage_header(ig_id, 100, wait)},
            )
        used = round(100 * (bucket.capacity - bucket.tokens) / bucket.capacity)
        usage_headers = {"X-Business-Use-Case-Usage": _usage_header(ig_id, used, 0)}

    if edge is None:
        if request.method != "GET":
            outcome(request, "not_found")
            return _unsupported(request.method.lower(), node)
        if not known:
            outcome(request, "not_found")
            return _unsupported("get", node)
        return _user(request, account, usage_headers)
    if request.method != "POST" or not known:
        outcome(request, "not_found")
        return _unsupported(request.method.lower(), node)
    return _send(request, account, usage_headers)


def _user(request: web.Request, account: dict[str, Any], headers: dict[str, str]) -> web.Response:
    raw = request["query"].get("fields") or "id"
    fields = [f.strip() for f in str(raw).split(",") if f.strip()]
    for name in fields:
        if name not in _USER_FIELDS:
            outcome(request, "invalid_request")
            return error(
                f"(#100) Tried accessing nonexisting field ({name}) on node type (User)", 100
            )
    values = {
        "id": account["ig_id"],
        "user_id": account["ig_id"],
        "username": account["username"],
        "name": account["name"],
        "account_type": "BUSINESS",
        "profile_picture_url": "https://scontent.cdninstagram.com/sandbox.jpg",
    }
    result = {name: values[name] for name in fields}
    result.setdefault("id", account["ig_id"])
    outcome(request, "profile")
    return json_response(result, 200, headers)


def _json_param(value: Any) -> Any:
    """Form posts carry nested objects as JSON strings, as the Graph API allows."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _send(request: web.Request, account: dict[str, Any], headers: dict[str, str]) -> web.Response:
    body = request["body"] if isinstance(request["body"], dict) else {}
    recipient = _json_param(body.get("recipient", request["query"].get("recipient")))
    message = _json_param(body.get("message", request["query"].get("message")))

    def reject(message: str, code: int, label: str, subcode: int | None = None) -> web.Response:
        outcome(request, label)
        return error(message, code, subcode=subcode, headers=headers)

    if not isinstance(recipient, dict) or not (recipient.get("id") or recipient.get("comment_id")):
        return reject("(#100) The parameter recipient is required", 100, "invalid_request")
    if not isinstance(message, dict) or not (message.get("text") or message.get("attachment")):
        return reject("(#100) The parameter message is required", 100, "invalid_request")
    text = message.get("text")
    if text is not None and not isinstance(text, str):
        return reject(
            "(#100) Param message[text] must be a UTF-8 encoded string", 100, "invalid_request"
        )
    if text and len(text) >= MAX_TEXT:
        return reject(
            f"(#100) Length of param message[text] must be less than {MAX_TEXT}",
            100,
            "too_long",
        )
    problem = _attachment_error(message)
    if problem:
        return reject(problem, 100, "invalid_request")
    messaging_type, tag = body.get("messaging_type"), body.get("tag")
    tagged = messaging_type == "MESSAGE_TAG"
    if (tagged or tag is not None) and tag != "HUMAN_AGENT":
        return reject("(#100) Param tag must be one of {HUMAN_AGENT}", 100, "invalid_request")
    recipient_id = str(recipient.get("id") or recipient.get("comment_id"))
    magic = MAGIC_RECIPIENTS.get(recipient_id)
    if magic is not None:
        code, subcode, text_ = magic
        return reject(text_, code, "rejected", subcode)
    if not _in_window(request, account, recipient_id, tagged):
        code, subcode, text_ = MAGIC_RECIPIENTS["10"]
        return reject(text_, code, "outside_window", subcode)
    attachment = message.get("attachment")
    if isinstance(attachment, dict) and "/404" in urlsplit(attachment["payload"]["url"]).path:
        return reject("(#100) Upload attachment failure", 100, "upload_failed", 2018047)
    message_id = _message_id(account["ig_id"])
    outcome(request, "sent", message_id)
    meta_webhooks.schedule_events(request.app, account, recipient_id, message_id)
    return json_response({"recipient_id": recipient_id, "message_id": message_id}, 200, headers)


def _attachment_error(message: dict[str, Any]) -> str | None:
    """Why `message.attachment` is invalid (or the message has text and an attachment)."""
    attachment = message.get("attachment")
    if attachment is None:
        return None
    if message.get("text"):
        return "(#100) Only one of message[text] or message[attachment] may be set"
    if not isinstance(attachment, dict) or attachment.get("type") not in ATTACHMENT_TYPES:
        return "(#100) Param message[attachment][type] must be one of {image, video, audio, file}"
    payload = attachment.get("payload")
    url = payload.get("url") if isinstance(payload, dict) else None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        return "(#100) Param message[attachment][payload][url] must be a valid URL"
    return None


def _in_window(
    request: web.Request, account: dict[str, Any], recipient_id: str, tagged: bool
) -> bool:
    """Whether the user wrote within the account's `session_window_hours` (always true when it
    is null), or within 7 days for a HUMAN_AGENT tagged reply."""
    hours = account["session_window_hours"]
    if hours is None:
        return True
    last = state_of(request).instagram_inbound.get((account["ig_id"], recipient_id))
    if last is None:
        return False
    age = time.time() - last
    return age < hours * 3600 or (tagged and age < HUMAN_AGENT_HOURS * 3600)


def _message_id(ig_id: str) -> str:
    raw = f"ig_message_item:1:IGMessageThread:{ig_id}:{uuid.uuid4().int >> 32}:{time.time_ns()}"
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()
