"""Checks for provider connection fields and destinations, shared by the provider specs.

Each returns the normalised value or raises ValueError with the message shown to the user.
Digits are [0-9], never \\d: in str patterns \\d also matches Arabic-Indic, full-width and other
Unicode digits, which providers refuse (or int() reads differently).
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from typing import Any

import email_validator
import phonenumbers

# What the rate limiter can represent: one message per 1,000 s up to 10,000 per second.
MIN_RATE_PER_SECOND = 0.001
MAX_RATE_PER_SECOND = 10_000

ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
# "+", then ASCII digits with the usual separators (spaces, dots, hyphens, parentheses); the
# number itself is read and checked by phonenumbers, which would also read non-ASCII digits.
_PHONE_TEXT = re.compile(r"\+[0-9][0-9 .()-]{5,40}")
_PHONE_HELP = "Must be an E.164 number such as +14155238886 (whatsapp: prefix allowed)."
_CHANNEL = re.compile(r"@[A-Za-z][A-Za-z0-9_]{4,31}")
_CHAT_ID = re.compile(r"-?[0-9]{1,20}")
_NUMERIC_ID = re.compile(r"[0-9]{1,32}")
_CALENDAR_ID = re.compile(r"[^\s/?#]{1,255}")


def phone(value: Any) -> str:
    """A phone number in international form, returned as E.164 (+ and digits only).

    The number must be one phonenumbers' metadata knows as assigned (`is_valid_number`): an
    impossible length or an unassigned area code (+1 555 …) is refused. Twilio's test numbers
    (+1 500 555 00xx, the sandbox's magic recipients) and 555-01xx fictional numbers of real
    area codes (+1 415 555 0123) are valid.
    """
    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    text = value.strip().removeprefix("whatsapp:").strip()
    if not _PHONE_TEXT.fullmatch(text):
        raise ValueError(_PHONE_HELP)
    number = _e164(text)
    if number is None:
        raise ValueError(
            "Must be a valid phone number in international form: this one has an impossible "
            "length or an unassigned country or area code."
        )
    return number


@lru_cache(maxsize=4096)
def _e164(text: str) -> str | None:
    """`text` (already ASCII-checked) as E.164 when phonenumbers deems it valid, else None."""
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if parsed.extension or not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def email(value: Any) -> str:
    """An email address, normalized: domain lower-cased and in ASCII (IDNA) form.

    Checked by email-validator without DNS (no deliverability check in the request path). The
    local part must be ASCII (not every provider takes SMTPUTF8); quoted local parts, IP-literal
    domains and display names are refused. The reserved `.test` domain is accepted: the sandbox's
    magic recipients (`bounce@sandbox.test`) and test data use it.
    """
    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    return _email(value.strip())


@lru_cache(maxsize=4096)
def _email(text: str) -> str:
    try:
        checked = email_validator.validate_email(
            text, check_deliverability=False, allow_smtputf8=False, test_environment=True
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"Must be a valid email address: {exc}") from None
    if "." not in checked.ascii_domain:  # test_environment lets a bare "@test" through
        raise ValueError("Must be a valid email address: the domain needs a dot.")
    return checked.ascii_email


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
