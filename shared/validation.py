"""Per-provider validation of connection fields and destinations (the Provider Field Guide)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email

from shared.errors import ValidationFailed
from shared.models import Provider

MAX_TOKEN_LENGTH = 4096
MAX_EXTRA_KEYS = 20
MAX_EXTRA_BYTES = 4096
MAX_EXTRA_STRING = 320
# What the rate limiter can represent: one message per 1,000 s up to 10,000 per second.
MIN_RATE_PER_SECOND = 0.001
MAX_RATE_PER_SECOND = 10_000

_SECRET_KEY = re.compile(
    r"token|secret|passw|pwd|api[_-]?key|apikey|^auth|[_-]auth|credential|private[_-]?key",
    re.IGNORECASE,
)
# Digits are [0-9], never \d: in str patterns \d also matches Arabic-Indic, full-width and other
# Unicode digits, which providers refuse (or int() reads differently).
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_TELEGRAM_TOKEN = re.compile(r"[0-9]{3,}:[A-Za-z0-9_-]{30,}")
_CHANNEL = re.compile(r"@[A-Za-z][A-Za-z0-9_]{4,31}")
_CHAT_ID = re.compile(r"-?[0-9]{1,20}")
_NUMERIC_ID = re.compile(r"[0-9]{1,32}")
_CALENDAR_ID = re.compile(r"[^\s/?#]{1,255}")


def _phone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    number = value.strip()
    number = number.removeprefix("whatsapp:")
    if not _E164.fullmatch(number):
        raise ValueError("Must be an E.164 number such as +14155238886 (whatsapp: prefix allowed).")
    return number


def _email(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    try:
        validate_email(value.strip())
    except DjangoValidationError:
        raise ValueError("Must be a valid email address.") from None
    return value.strip()


def _account_sid(value: Any) -> str:
    if not isinstance(value, str) or not _ACCOUNT_SID.fullmatch(value.strip()):
        raise ValueError("Must be a Twilio Account SID: AC followed by 32 hexadecimal characters.")
    return value.strip()


def _numeric_id(value: Any) -> str:
    text = (
        str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    )
    if not _NUMERIC_ID.fullmatch(text):
        raise ValueError("Must be a numeric Instagram-scoped id.")
    return text


def _chat_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        text = value.strip()
        if _CHAT_ID.fullmatch(text) or _CHANNEL.fullmatch(text):
            return text
    raise ValueError("Must be a Telegram chat id (an integer) or a @channelusername.")


def _calendar_id(value: Any) -> str:
    if not isinstance(value, str) or not _CALENDAR_ID.fullmatch(value.strip()):
        raise ValueError("Must be a calendar id such as 'primary' or an email-like id.")
    return value.strip()


def _short_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("Must be a non-empty string.")
    return value.strip()


def _parse_mode(value: Any) -> str:
    if value not in ("MarkdownV2", "HTML", "Markdown"):
        raise ValueError("Must be one of MarkdownV2, HTML, Markdown.")
    return value


def _rate(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not MIN_RATE_PER_SECOND <= value <= MAX_RATE_PER_SECOND  # False for NaN too
    ):
        raise ValueError(
            f"Must be a number of messages per second from {MIN_RATE_PER_SECOND} "
            f"to {MAX_RATE_PER_SECOND}."
        )
    return float(value)


Field = Callable[[Any], Any]

# provider -> {field: (validator, required)}
FIELDS: dict[str, dict[str, tuple[Field, bool]]] = {
    Provider.WHATSAPP: {
        "account_sid": (_account_sid, True),
        "from_whatsapp": (_phone, True),
        "to_whatsapp": (_phone, False),
    },
    Provider.SENDGRID: {
        "from_email": (_email, True),
        "from_name": (_short_text, False),
        "to_email": (_email, False),
    },
    Provider.TELEGRAM: {
        "chat_id": (_chat_id, False),
        "parse_mode": (_parse_mode, False),
    },
    Provider.INSTAGRAM: {
        "instagram_scoped_id": (_numeric_id, True),
    },
    Provider.GOOGLE_CALENDAR: {
        "calendar_id": (_calendar_id, False),
    },
}
COMMON_FIELDS: dict[str, tuple[Field, bool]] = {"rate_limit_per_second": (_rate, False)}

# Settings-test destinations: may also be given for one Test Connection call only.
TEST_DESTINATION_FIELDS = {"to_whatsapp", "to_email", "chat_id"}

DESTINATION_VALIDATORS: dict[str, Field] = {
    Provider.WHATSAPP: _phone,
    Provider.SENDGRID: _email,
    Provider.TELEGRAM: _chat_id,
    Provider.INSTAGRAM: _numeric_id,
}


def validate_token(provider: str, token: Any) -> str:
    """The token, checked for presence, size and (where the provider defines one) its shape."""
    if not isinstance(token, str) or not token.strip():
        raise ValidationFailed(
            "A token is required.", errors={"token": ["This field is required."]}
        )
    token = token.strip()
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValidationFailed(
            "The token is too long.",
            errors={"token": [f"Must be at most {MAX_TOKEN_LENGTH} characters."]},
        )
    problem = ""
    if provider == Provider.TELEGRAM and not _TELEGRAM_TOKEN.fullmatch(token):
        problem = "Must be a Telegram bot token of the form <bot id>:<secret> from @BotFather."
    elif provider == Provider.SENDGRID and not token.startswith("SG."):
        problem = "Must be a SendGrid API key (it starts with 'SG.')."
    elif provider == Provider.GOOGLE_CALENDAR and token.startswith("{"):
        problem = _google_json_problem(token)
    if problem:
        raise ValidationFailed("The token does not look right.", errors={"token": [problem]})
    return token


def _google_json_problem(token: str) -> str:
    try:
        data = json.loads(token)
    except ValueError:
        return "Must be an access token or an authorized-user JSON object."
    if not isinstance(data, dict):
        return "Must be an access token or an authorized-user JSON object."
    missing = [k for k in ("refresh_token", "client_id", "client_secret") if not data.get(k)]
    if missing:
        return "The authorized-user JSON needs " + ", ".join(missing) + "."
    return ""


def validate_extra(provider: str, extra: Any, *, partial: bool = False) -> dict[str, Any]:
    """Normalised `extra` for `provider`; raises ValidationFailed naming every field at fault.

    With `partial`, required fields may be absent (a Test Connection override).
    """
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise ValidationFailed(
            "extra must be a JSON object.", errors={"extra": ["Must be an object."]}
        )
    errors: dict[str, list[str]] = {}
    if len(extra) > MAX_EXTRA_KEYS:
        errors["extra"] = [f"At most {MAX_EXTRA_KEYS} keys are allowed."]
    elif len(json.dumps(extra, default=str)) > MAX_EXTRA_BYTES:
        errors["extra"] = [f"Must be at most {MAX_EXTRA_BYTES} bytes as JSON."]
    if errors:
        raise ValidationFailed("extra is too large.", errors=errors)

    fields = {**FIELDS[provider], **COMMON_FIELDS}
    cleaned: dict[str, Any] = {}
    for key, value in extra.items():
        path = f"extra.{key}"
        if not isinstance(key, str) or _SECRET_KEY.search(key):
            errors[path] = ["extra must not hold secrets; send the secret as `token`."]
            continue
        if key not in fields:
            errors[path] = [f"Unknown field for {provider}. Allowed: {', '.join(sorted(fields))}."]
            continue
        if isinstance(value, str) and len(value) > MAX_EXTRA_STRING:
            errors[path] = [f"Must be at most {MAX_EXTRA_STRING} characters."]
            continue
        try:
            cleaned[key] = fields[key][0](value)
        except ValueError as exc:
            errors[path] = [str(exc)]
    if not partial:
        for key, (_, required) in fields.items():
            if required and key not in extra:
                errors[f"extra.{key}"] = ["This field is required."]
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"{first}: {errors[first][0]}", errors=errors)
    if provider == Provider.GOOGLE_CALENDAR and not partial:
        cleaned.setdefault("calendar_id", "primary")
    return cleaned


def validate_destination(provider: str, to: Any) -> str:
    """The normalised destination for a message through `provider`: a string, never a number."""
    validator = DESTINATION_VALIDATORS.get(provider)
    if validator is None:
        raise ValidationFailed(
            f"{provider} does not deliver messages.",
            errors={"provider": ["This provider does not deliver messages."]},
        )
    if not isinstance(to, str):
        raise ValidationFailed("to: Must be a string.", errors={"to": ["Must be a string."]})
    try:
        return validator(to)
    except ValueError as exc:
        raise ValidationFailed(f"to: {exc}", errors={"to": [str(exc)]}) from None
