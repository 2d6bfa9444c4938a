"""Checks for provider connection fields and destinations, shared by the provider specs.

Each returns the normalised value or raises ValueError with the message shown to the user.
Digits are [0-9], never \\d: in str patterns \\d also matches Arabic-Indic, full-width and other
Unicode digits, which providers refuse (or int() reads differently).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email

# What the rate limiter can represent: one message per 1,000 s up to 10,000 per second.
MIN_RATE_PER_SECOND = 0.001
MAX_RATE_PER_SECOND = 10_000

ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_CHANNEL = re.compile(r"@[A-Za-z][A-Za-z0-9_]{4,31}")
_CHAT_ID = re.compile(r"-?[0-9]{1,20}")
_NUMERIC_ID = re.compile(r"[0-9]{1,32}")
_CALENDAR_ID = re.compile(r"[^\s/?#]{1,255}")


def phone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    number = value.strip().removeprefix("whatsapp:")
    if not _E164.fullmatch(number):
        raise ValueError("Must be an E.164 number such as +14155238886 (whatsapp: prefix allowed).")
    return number


def email(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    try:
        validate_email(value.strip())
    except DjangoValidationError:
        raise ValueError("Must be a valid email address.") from None
    return value.strip()


def account_sid(value: Any) -> str:
    if not isinstance(value, str) or not ACCOUNT_SID.fullmatch(value.strip()):
        raise ValueError("Must be a Twilio Account SID: AC followed by 32 hexadecimal characters.")
    return value.strip()


def numeric_id(value: Any) -> str:
    text = (
        str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    )
    if not _NUMERIC_ID.fullmatch(text):
        raise ValueError("Must be a numeric Instagram-scoped id.")
    return text


def chat_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        text = value.strip()
        if _CHAT_ID.fullmatch(text) or _CHANNEL.fullmatch(text):
            return text
    raise ValueError("Must be a Telegram chat id (an integer) or a @channelusername.")


def calendar_id(value: Any) -> str:
    if not isinstance(value, str) or not _CALENDAR_ID.fullmatch(value.strip()):
        raise ValueError("Must be a calendar id such as 'primary' or an email-like id.")
    return value.strip()


def short_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("Must be a non-empty string.")
    return value.strip()


def one_of(*choices: str) -> Any:
    """A check accepting exactly one of `choices`."""

    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"Must be one of {', '.join(choices)}.")
        return value

    return check


def rate(value: Any) -> float:
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


def ec_public_key(value: Any) -> str:
    """A P-256 public key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    problem = "Must be the Event Webhook verification key: base64 of a P-256 public key."
    if not isinstance(value, str):
        raise ValueError(problem)
    try:
        key = load_der_public_key(base64.b64decode(value.strip(), validate=True))
    except ValueError:
        raise ValueError(problem) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError(problem)
    return value.strip()
