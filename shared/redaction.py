"""Secret scrubbing for any text: known token shapes plus the secret-shaped token values seen."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote_plus

REDACTED = "[REDACTED]"

# Ordered: URL-path tokens first so the "bot" prefix survives as a hint.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/bot\d{3,}:[A-Za-z0-9_-]{20,}"), "/bot" + REDACTED),
    (re.compile(r"\b\d{3,}:[A-Za-z0-9_-]{30,}"), REDACTED),  # Telegram bot token
    (re.compile(r"\bSG\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), REDACTED),  # SendGrid key
    (re.compile(r"\bSG\.[A-Za-z0-9_.-]{16,}"), REDACTED),
    (re.compile(r"\bya29\.[A-Za-z0-9_.-]+"), REDACTED),  # Google access token
    (re.compile(r"\b1//[A-Za-z0-9_-]{16,}"), REDACTED),  # Google refresh token
    (re.compile(r"\b(?:IGAA|EAA)[A-Za-z0-9]{16,}"), REDACTED),  # Meta access tokens
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{16,}"), REDACTED),  # webhook signing secret
    (re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9_.~+/=:-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"\b(Token)\s+[0-9a-f]{40}\b"), r"\1 " + REDACTED),  # DRF API token header
    (
        re.compile(
            r"(?i)([?&](?:access_token|refresh_token|token|api_key|key|client_secret|code"
            r"|code_verifier)=)[^&\s'\"]+"
        ),
        r"\1" + REDACTED,
    ),
)

# What a value must look like to join the process-wide list (it then censors every log line, so
# tenant-chosen words, identifiers, JSON fragments and timestamps must never qualify):
MIN_SECRET_LENGTH = 16
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9._~+/=:-]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
MIN_ENTROPY_BITS = 3.5  # Shannon bits per character (random base62/64 of 24+ chars: > 3.6)
MIN_HEX_ENTROPY_BITS = 3.0  # hex has 16 symbols; random 32-hex (Twilio) measures >= 3.0
MIN_LETTERS_ENTROPY_BITS = 4.0  # no digit: random 28+ letters pass 99%, identifiers stay < 4.0
# Structured tokens (Google authorized-user JSON): only these fields are secrets.
_SECRET_FIELD = re.compile(r"(?i)^(?:.*_)?(?:token|secret|password|api_?key|private_key)$")
_MIN_FRAGMENT = 8

# Query parameter names that carry credentials (auth_token, apikey, X-Amz-Signature, code, ...).
_CREDENTIAL_PARAM = re.compile(
    r"(?i)token|secret|passw|pwd|api[-_]?key|apikey|^key$|[-_]key$|auth|signature|^sig$"
    r"|credential|session|^code$|jwt"
)

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None
_dirty = False


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def secret_shaped(value: str) -> bool:
    """Whether `value` looks like a credential: long, one token, letters (and digits), random."""
    if len(value) < MIN_SECRET_LENGTH or not _TOKEN_ALPHABET.fullmatch(value):
        return False
    if not any(c.isalpha() for c in value):
        return False
    if not any(c.isdigit() for c in value):
        # Without digits only mixed-case, very random text qualifies (CamelCase names do not).
        mixed = value.lower() != value != value.upper()
        return mixed and _entropy(value) >= MIN_LETTERS_ENTROPY_BITS
    floor = MIN_HEX_ENTROPY_BITS if _HEX.fullmatch(value) else MIN_ENTROPY_BITS
    return _entropy(value) >= floor


def _json_secrets(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and _SECRET_FIELD.match(str(key)):
                yield item
            else:
                yield from _json_secrets(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_secrets(item)


def secret_values(token: str) -> set[str]:
    """The secret-shaped values a token holds: the secret fields of a JSON token, else the token
    and each part of a `user:secret` pair."""
    try:
        parsed = json.loads(token) if token.lstrip().startswith(("{", "[")) else None
    except ValueError:
        parsed = None
    if parsed is not None:
        candidates = set(_json_secrets(parsed))
    else:
        candidates = {token, *token.split(":")}
    return {value for value in candidates if secret_shaped(value)}


def base64_fragments(secret: str) -> set[str]:
    """Text present in any standard or URL-safe base64 of bytes that contain `secret`.

    Base64 encodes 3 bytes as 4 characters, so the encoding of a secret inside a larger value
    (`user:secret`, a JSON body) depends on its offset mod 3: for each offset, the whole triples
    of the secret encode to one fixed string. Partial triples at the edges (at most 2 bytes of
    the secret on each side) are left alone.
    """
    raw = secret.encode()
    fragments: set[str] = set()
    for skip in range(3):
        body = raw[skip:]
        body = body[: len(body) - len(body) % 3]
        text = base64.b64encode(body).decode()
        if len(text) >= _MIN_FRAGMENT:
            fragments.update({text, text.replace("+", "-").replace("/", "_")})
    # An echoed header is sometimes percent-encoded on top (a URL, a form body).
    return fragments | {quote(fragment, safe="") for fragment in fragments}


def encoded_forms(secret: str) -> set[str]:
    """`secret` as it appears percent-encoded (any safe set) or base64-encoded at any offset."""
    forms = {secret, quote(secret, safe=""), quote(secret, safe="/"), quote(secret, safe=":/")}
    forms.add(quote(secret, safe="").replace("%20", "+"))
    return forms | base64_fragments(secret)


def values_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for secrets and every encoded form of them, longest first."""
    forms: set[str] = set()
    for value in values:
        if value:
            forms.update(encoded_forms(value))
    if not forms:
        return None
    return re.compile("|".join(re.escape(s) for s in sorted(forms, key=len, reverse=True)))


def scrub_values(text: str, values: Iterable[str], replacement: str = REDACTED) -> str:
    """`text` with each of `values` (exact, percent-encoded or base64 at any offset) replaced."""
    pattern = values_pattern(values)
    return pattern.sub(replacement, text) if pattern is not None and text else text


def remember_secret(value: str | None) -> None:
    """Scrub the secret-shaped values of this token (and their encoded forms) from every line."""
    global _dirty
    if not value:
        return
    candidates = secret_values(value)
    with _lock:
        if candidates <= _secrets:
            return
        _secrets.update(candidates)
        _dirty = True  # compiled by the next redact(): a batch decrypting many tokens compiles once


def forget_secrets() -> None:
    """Drop every remembered value (tests only)."""
    global _secret_re, _dirty
    with _lock:
        _secrets.clear()
        _secret_re, _dirty = None, False


def _known_pattern() -> re.Pattern[str] | None:
    global _secret_re, _dirty
    if _dirty:
        with _lock:
            if _dirty:
                _secret_re, _dirty = values_pattern(_secrets), False
    return _secret_re


def redact(text: str) -> str:
    """`text` with every remembered secret and every known token shape replaced by [REDACTED]."""
    if not text:
        return text
    known = _known_pattern()
    if known is not None:
        text = known.sub(REDACTED, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_query(query: str) -> str:
    """A raw query string with the value of every credential-looking parameter replaced."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        if sep and value and _CREDENTIAL_PARAM.search(unquote_plus(name)):
            value = REDACTED
        parts.append(f"{name}{sep}{value}")
    return "&".join(parts)


def redact_uri(uri: str) -> str:
    """A request URI (path?query) with credential-looking query values and secrets redacted."""
    path, sep, query = uri.partition("?")
    return redact(path + sep + redact_query(query))
