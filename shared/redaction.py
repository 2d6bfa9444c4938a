"""Secret scrubbing for any text: known token shapes plus every token value this process has seen."""

from __future__ import annotations

import re
import threading

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
    (re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9_.~+/=:-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"\b(Token)\s+[0-9a-f]{40}\b"), r"\1 " + REDACTED),  # DRF API token header
    (re.compile(r"(?i)([?&](?:access_token|token|api_key|key)=)[^&\s'\"]+"), r"\1" + REDACTED),
)

_MIN_SECRET_LENGTH = 8
_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None


def remember_secret(value: str | None) -> None:
    """Add a token value (and its JSON-embedded parts) to the set scrubbed from every log line."""
    global _secret_re
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    candidates = {value}
    # Structured tokens (Google authorized-user JSON) hold several secrets.
    candidates.update(re.findall(r'"([^"]{' + str(_MIN_SECRET_LENGTH) + r',})"', value))
    with _lock:
        if candidates <= _secrets:
            return
        _secrets.update(candidates)
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def forget_secrets() -> None:
    """Drop every remembered value (tests only)."""
    global _secret_re
    with _lock:
        _secrets.clear()
        _secret_re = None


def redact(text: str) -> str:
    """`text` with every remembered secret and every known token shape replaced by [REDACTED]."""
    if not text:
        return text
    known = _secret_re
    if known is not None:
        text = known.sub(REDACTED, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
