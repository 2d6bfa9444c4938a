"""Checks for provider connection fields and destinations, shared by the provider specs.

Each returns the normalised value or raises ValueError with the message shown to the user.
Digits are [0-9], never \\d: in str patterns \\d also matches Arabic-Indic, full-width and other
Unicode digits, which providers refuse (or int() reads differently).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import email_validator
import phonenumbers

from .spec import FieldProblem

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


CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
SENDGRID_TEMPLATE_ID = re.compile(r"d-[0-9a-fA-F]{32}")
_VARIABLE_KEY = re.compile(r"[A-Za-z0-9_]{1,16}")
_MAX_VARIABLES = 100
_MAX_VARIABLE_LENGTH = 1600
_MAX_TEMPLATE_DATA_BYTES = 65_536
_MAX_URL_LENGTH = 2048
# What Postgres' jsonb cannot store: NUL, and a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _object(value: Any, parts: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"Must be an object with {' and '.join(parts)}: {what}.")
    for key in value:
        if key not in parts:
            raise FieldProblem(str(key)[:64], f"Unknown field; expected {' and '.join(parts)}.")
    return value


def whatsapp_template(value: Any) -> dict[str, Any]:
    """A Twilio Content template: `content_sid` (HX + 32 hex) and `variables`, placeholder name
    -> text, as Twilio takes them (at most 100; name up to 16 characters; text 1-1600
    characters without newlines, tabs or more than four consecutive spaces). A variable left
    out falls back to the template's default sample value at Twilio."""
    template = _object(value, ("content_sid", "variables"), "an approved Twilio Content template")
    sid = template.get("content_sid")
    if not isinstance(sid, str) or not CONTENT_SID.fullmatch(sid):
        raise FieldProblem(
            "content_sid",
            "Must be a Twilio Content SID: HX followed by 32 hexadecimal characters.",
        )
    variables = template.get("variables")
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise FieldProblem("variables", 'Must be an object such as {"1": "Ana"}.')
    if len(variables) > _MAX_VARIABLES:
        raise FieldProblem("variables", f"Must have at most {_MAX_VARIABLES} variables.")
    for key, text in variables.items():
        if not _VARIABLE_KEY.fullmatch(key):
            raise FieldProblem(
                "variables", "Each name must be 1-16 letters, digits or underscores, like 1."
            )
        problem = _variable_problem(text)
        if problem:
            raise FieldProblem(f"variables.{key}", problem)
    return {"content_sid": sid, "variables": dict(variables)}


def _variable_problem(text: Any) -> str:
    if not isinstance(text, str):
        return "Must be a string."
    if not text.strip():
        return "Must not be empty: Twilio refuses an empty variable (21656)."
    if len(text) > _MAX_VARIABLE_LENGTH:
        return f"Must be at most {_MAX_VARIABLE_LENGTH} characters."
    if "\n" in text or "\t" in text or "     " in text:
        return "Must not contain newlines, tabs or more than four consecutive spaces (WhatsApp)."
    if _UNSTORABLE.search(text):
        return "Null characters and lone surrogates are not allowed."
    return ""


def _bad_text(value: Any) -> bool:
    """Whether a JSON value holds a string (key or value) that Postgres' jsonb cannot store:
    NUL or a lone surrogate."""
    if isinstance(value, str):
        return bool(_UNSTORABLE.search(value))
    if isinstance(value, dict):
        return any(_bad_text(k) or _bad_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_bad_text(item) for item in value)
    return False


def sendgrid_template(value: Any) -> dict[str, Any]:
    """A SendGrid dynamic template: `id` (d- + 32 hex) and `data`, the object its Handlebars
    placeholders read (at most 64 KiB as JSON)."""
    template = _object(value, ("id", "data"), "a SendGrid dynamic template")
    template_id = template.get("id")
    if not isinstance(template_id, str) or not SENDGRID_TEMPLATE_ID.fullmatch(template_id):
        raise FieldProblem(
            "id",
            "Must be a SendGrid dynamic template id: d- followed by 32 hexadecimal characters.",
        )
    data = template.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FieldProblem("data", 'Must be an object such as {"name": "Ana"}.')
    try:
        size = len(json.dumps(data, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError):  # NaN/Infinity, or (from Python) a value JSON cannot hold
        raise FieldProblem(
            "data", "Must be plain JSON (no NaN, Infinity or other types)."
        ) from None
    if size > _MAX_TEMPLATE_DATA_BYTES:
        raise FieldProblem("data", f"Must be at most {_MAX_TEMPLATE_DATA_BYTES} bytes as JSON.")
    if _bad_text(data):
        raise FieldProblem("data", "Null characters and lone surrogates are not allowed.")
    return {"id": template_id.lower(), "data": data}


def media_url(value: Any) -> str:
    """A public https URL the provider fetches the media from (we never fetch it ourselves).

    The rules are the address part of the webhook SSRF rules: https, a host, no credentials, no
    fragment, and a literal IP host must be a public address (`localhost` is refused too).
    Names are not resolved here: the provider resolves them from its own network.
    """
    from shared.events.ssrf import blocked_reason  # lazily: shared.events imports the models

    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    if len(value) > _MAX_URL_LENGTH:
        raise ValueError(f"Must be at most {_MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("Must not contain whitespace or control characters.")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("Must be a valid URL.") from None
    if parts.scheme != "https":
        raise ValueError("Must be an https:// URL.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("Must have a host.")
    if parts.username is not None or parts.password is not None:
        raise ValueError("Must not carry credentials (user:password@).")
    if parts.fragment:
        raise ValueError("Must not have a #fragment.")
    if host == "localhost" or host.endswith(".localhost"):
        raise ValueError("Must be a public address, not localhost.")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        why = blocked_reason(literal)
        if why:
            raise ValueError(f"Must be a public address, not {why}.")
    return value


_MEDIA_KINDS = {
    "image": ("jpg", "jpeg", "png", "webp", "gif"),
    "video": ("mp4", "mov", "webm", "avi", "3gp"),
    "audio": ("mp3", "ogg", "aac", "m4a", "wav", "amr", "opus"),
}


def media_kind(url: str) -> str:
    """image, video, audio or document, from the URL path's extension (document when none)."""
    path = urlsplit(url).path.lower()
    extension = path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
    return next((kind for kind, exts in _MEDIA_KINDS.items() if extension in exts), "document")
