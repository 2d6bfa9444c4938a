"""SendGrid v3 simulator: POST /v3/mail/send and GET /v3/scopes."""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
import time
from typing import Any

from aiohttp import web

from sandbox import sendgrid_events
from sandbox.common import (
    bearer_token,
    json_response,
    outcome,
    override_response,
    state_of,
    url_safe_id,
)
from sandbox.control import echo_request
from sandbox.state import State, acquire

SLUG = "sendgrid"
MAGIC_INVALID = "invalid@sandbox.test"
MAX_BYTES = 30 * 1024 * 1024
HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
UNLIMITED = 10_000

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_DYNAMIC_TEMPLATE = re.compile(r"d-[0-9a-fA-F]{32}")
_LEGACY_TEMPLATE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def errors(
    status: int, items: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"errors": items}, status, headers)


def _err(message: str, field: str | None = None, help: Any = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": help}


_FAULT_MESSAGES = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "access forbidden",
    404: "resource not found",
    413: "The request entity is too large",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


def fault_response(
    request: web.Request, status: int, retry_after: float | None, body: Any
) -> web.Response:
    headers: dict[str, str] = {}
    if status == 429:
        wait = retry_after if retry_after is not None else 1
        headers = {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(time.time() + wait)),
        }
    elif retry_after:
        headers = {"Retry-After": str(math.ceil(retry_after))}
    if body is not None:
        return override_response(echo_request(request, body), status, headers)
    return errors(status, [_err(_FAULT_MESSAGES.get(status, "error"))], headers)


def _valid_email(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value.lower() != MAGIC_INVALID
        and _EMAIL.fullmatch(value) is not None
    )


def _rate_headers(state: State, account: dict[str, Any]) -> tuple[dict[str, str], float]:
    """Rate-limit headers plus the wait (0 = allowed) for one request of this key."""
    bucket = state.account_bucket(SLUG, account["api_key"], account)
    now = time.time()
    if bucket is None:
        headers = {
            "X-RateLimit-Limit": str(UNLIMITED),
            "X-RateLimit-Remaining": str(UNLIMITED - 1),
            "X-RateLimit-Reset": str(math.floor(now) + 1),
        }
        return headers, 0.0
    wait = acquire([bucket])
    refill = (bucket.capacity - bucket.tokens) / bucket.rate
    headers = {
        "X-RateLimit-Limit": str(math.ceil(bucket.capacity)),
        "X-RateLimit-Remaining": str(bucket.remaining()),
        "X-RateLimit-Reset": str(math.ceil(now + max(wait, refill, 1e-3))),
    }
    return headers, wait


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    token = bearer_token(request)
    if token is None:
        outcome(request, "auth_failed")
        return errors(401, [_err("authorization required")])
    account = state.accounts[SLUG].get(token)
    if account is None or not hmac.compare_digest(account["api_key"], token):
        outcome(request, "auth_failed")
        return errors(
            401, [_err("The provided authorization grant is invalid, expired, or revoked")]
        )
    route = (request.method, request.path.rstrip("/"))
    if route not in (("POST", "/v3/mail/send"), ("GET", "/v3/scopes")):
        outcome(request, "not_found")
        return errors(404, [_err("resource not found")])
    headers, wait = _rate_headers(state, account)
    if wait:
        outcome(request, "rate_limited")
        return errors(429, [_err("too many requests")], headers)
    if route[1] == "/v3/scopes":
        outcome(request, "scopes")
        return json_response({"scopes": account["scopes"]}, 200, headers)
    if "mail.send" not in account["scopes"]:
        outcome(request, "forbidden")
        return errors(403, [_err("access forbidden")], headers)
    if len(request.get("raw", b"")) > MAX_BYTES:
        outcome(request, "too_large")
        return errors(413, [_err("The request entity is too large")], headers)
    body = request["body"]
    if not isinstance(body, dict):
        outcome(request, "invalid_request")
        return errors(400, [_err("Bad Request", None, None)], headers)
    problems = validate(body)
    if problems:
        outcome(request, "invalid_request")
        return errors(400, problems, headers)
    if not _sender_verified(account, body["from"]["email"]):
        outcome(request, "unverified_sender")
        return errors(
            403,
            [
                _err(
                    "The from address does not match a verified Sender Identity. Mail cannot be "
                    "sent until this error is resolved. Visit https://sendgrid.com/docs/"
                    "for-developers/sending-email/sender-identity/ to see the Sender Identity "
                    "requirements",
                    "from",
                )
            ],
            headers,
        )
    settings = body.get("mail_settings") or {}
    if isinstance(settings, dict) and (settings.get("sandbox_mode") or {}).get("enable") is True:
        outcome(request, "sandbox_mode")
        return web.Response(status=200, headers=headers)
    message_id = url_safe_id(16)
    outcome(request, "sent", message_id)
    sendgrid_events.schedule_events(request.app, account, body, message_id)
    return web.Response(status=202, headers={**headers, "X-Message-Id": message_id})


def _sender_verified(account: dict[str, Any], email: str) -> bool:
    senders = account["verified_senders"]
    if senders is None:
        return True
    email = email.lower()
    domain = "@" + email.rsplit("@", 1)[-1]
    return any(s.lower() in (email, domain) for s in senders)


def validate(body: dict[str, Any]) -> list[dict[str, Any]]:
    """SendGrid's 400 validation errors for a mail/send body (empty when valid)."""
    out: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        out.append(
            _err(
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
                f"{HELP}#-Personalizations-Errors",
            )
        )
        personalizations = []
    elif len(personalizations) > 1000:
        out.append(
            _err(
                "The personalizations field must have at most 1000 items.",
                "personalizations",
                f"{HELP}#-Personalizations-Errors",
            )
        )
    total = 0
    for i, p in enumerate(personalizations):
        if not isinstance(p, dict):
            out.append(_err("Invalid type. Expected: object", f"personalizations.{i}"))
            continue
        if not isinstance(p.get("to"), list) or not p["to"]:
            out.append(
                _err(
                    "The to array is required for all personalization objects, and must have "
                    "at least one email object with a valid email address.",
                    f"personalizations.{i}.to",
                    f"{HELP}#message.personalizations.to",
                )
            )
        seen: set[str] = set()
        duplicate_reported = False
        for kind in ("to", "cc", "bcc"):
            recipients = p.get(kind) or []
            if not isinstance(recipients, list):
                out.append(_err("Invalid type. Expected: array", f"personalizations.{i}.{kind}"))
                continue
            for j, r in enumerate(recipients):
                total += 1
                email = r.get("email") if isinstance(r, dict) else None
                if not _valid_email(email):
                    out.append(
                        _err(
                            "Does not contain a valid address.",
                            f"personalizations.{i}.{kind}.{j}.email",
                            f"{HELP}#message.personalizations.{kind}",
                        )
                    )
                    continue
                key = email.lower()
                if key in seen and not duplicate_reported:
                    duplicate_reported = True
                    out.append(
                        _err(
                            "Each email address in the personalization block should be unique "
                            "between to, cc, and bcc. We found the first duplicate instance of "
                            f"[{email}] in the personalizations.{i}.{kind} field.",
                            f"personalizations.{i}",
                            f"{HELP}#message.recipient-errors",
                        )
                    )
                seen.add(key)
    if total > 1000:
        out.append(
            _err(
                "The total number of recipients must be less than 1000. This includes all "
                "recipients defined within the to, cc, and bcc parameters, across each object "
                "that you include in the personalizations array.",
                "personalizations",
                f"{HELP}#message.recipient-errors",
            )
        )
    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        out.append(
            _err(
                "The from object must be provided for every email send. It is an object that "
                "requires an email parameter, but may also contain a name parameter.",
                "from",
                f"{HELP}#message.from",
            )
        )
    elif not _valid_email(sender["email"]):
        out.append(
            _err(
                "The from email does not contain a valid address.",
                "from.email",
                f"{HELP}#message.from",
            )
        )
    reply_to = body.get("reply_to")
    if reply_to is not None and not (
        isinstance(reply_to, dict) and _valid_email(reply_to.get("email"))
    ):
        out.append(
            _err(
                "The reply_to email does not contain a valid address.",
                "reply_to.email",
                f"{HELP}#message.reply_to",
            )
        )
    template_id = body.get("template_id")
    templated = False
    if template_id is not None:
        if isinstance(template_id, str) and (
            _DYNAMIC_TEMPLATE.fullmatch(template_id) or _LEGACY_TEMPLATE.fullmatch(template_id)
        ):
            templated = True
        else:
            out.append(
                _err(
                    f"The template_id must be a valid GUID, you provided '{template_id}'.",
                    "template_id",
                    f"{HELP}#message.template_id",
                )
            )
    dynamic = templated and str(template_id).startswith("d-")
    for i, p in enumerate(personalizations):
        if not isinstance(p, dict):
            continue
        data = p.get("dynamic_template_data")
        if data is not None and not isinstance(data, dict):
            out.append(
                _err(
                    "Invalid type. Expected: object, given: " + _json_type(data) + ".",
                    f"personalizations.{i}.dynamic_template_data",
                    f"{HELP}#message.personalizations.dynamic_template_data",
                )
            )
        if dynamic and p.get("substitutions") is not None:
            out.append(
                _err(
                    "Substitutions may not be used with dynamic templating",
                    f"personalizations.{i}.substitutions",
                    f"{HELP}#message.personalizations.substitutions",
                )
            )
    out.extend(_attachment_errors(body.get("attachments")))
    every_has_subject = bool(personalizations) and all(
        isinstance(p, dict) and p.get("subject") for p in personalizations
    )
    if not templated and not body.get("subject") and not every_has_subject:
        out.append(
            _err(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
                f"{HELP}#message.subject",
            )
        )
    content = body.get("content")
    if content is None or content == []:
        if not templated:
            out.append(
                _err(
                    "Unless a valid template_id is provided, the content parameter is required. "
                    "There must be at least one defined content block. We typically suggest both "
                    "text/plain and text/html blocks are included, but only one block is "
                    "required.",
                    "content",
                    f"{HELP}#message.content",
                )
            )
    elif not isinstance(content, list):
        out.append(_err("Invalid type. Expected: array", "content"))
    else:
        types = []
        for i, block in enumerate(content):
            block = block if isinstance(block, dict) else {}
            ctype, value = block.get("type"), block.get("value")
            types.append(ctype)
            if not isinstance(ctype, str) or not ctype or re.search(r"[;\r\n]", ctype):
                out.append(
                    _err(
                        "The content type cannot contain ';', or CRLF characters, and must be "
                        "at least one character in length.",
                        f"content.{i}.type",
                        f"{HELP}#message.content.type",
                    )
                )
            if not isinstance(value, str) or not value:
                out.append(
                    _err(
                        "The content value must be a string at least one character in length.",
                        f"content.{i}.value",
                        f"{HELP}#message.content.value",
                    )
                )
        if "text/plain" in types and types[0] != "text/plain":
            out.append(
                _err(
                    "If present, text/plain content must be first, followed by text/html, "
                    "followed by any other content.",
                    "content",
                    f"{HELP}#message.content",
                )
            )
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "null"


def _attachment_errors(attachments: Any) -> list[dict[str, Any]]:
    """SendGrid's 400s for `attachments[]`: base64 `content` and `filename` required, `type`
    without ';' or CRLF, `disposition` attachment|inline, `content_id` required for inline."""
    if attachments is None:
        return []
    if not isinstance(attachments, list):
        return [_err("Invalid type. Expected: array", "attachments")]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(attachments):
        item = item if isinstance(item, dict) else {}
        help_ = f"{HELP}#message.attachments"
        content = item.get("content")
        if not isinstance(content, str) or not content:
            out.append(
                _err("The attachment content is required.", f"attachments.{i}.content", help_)
            )
        elif not _base64(content):
            out.append(
                _err(
                    "The attachment content must be base64 encoded.",
                    f"attachments.{i}.content",
                    help_,
                )
            )
        filename = item.get("filename")
        if not isinstance(filename, str) or not filename:
            out.append(
                _err(
                    "The attachment filename parameter is required.",
                    f"attachments.{i}.filename",
                    help_,
                )
            )
        ctype = item.get("type")
        if ctype is not None and (
            not isinstance(ctype, str) or not ctype or re.search(r"[;\r\n]", ctype)
        ):
            out.append(
                _err(
                    "The attachment type cannot contain ';', or CRLF characters, and must be at "
                    "least one character in length.",
                    f"attachments.{i}.type",
                    help_,
                )
            )
        disposition = item.get("disposition", "attachment")
        if disposition not in ("attachment", "inline"):
            out.append(
                _err(
                    'The disposition of your attachment can be either "inline" or "attachment".',
                    f"attachments.{i}.disposition",
                    help_,
                )
            )
        elif disposition == "inline" and not item.get("content_id"):
            out.append(
                _err(
                    "The content_id parameter is required if the disposition is set to inline.",
                    f"attachments.{i}.content_id",
                    help_,
                )
            )
    return out


def _base64(value: str) -> bool:
    try:
        base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
