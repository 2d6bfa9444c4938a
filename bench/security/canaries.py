"""Canary tokens and the sweep's counting: plain, percent- and base64-encoded fragments."""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
from urllib.parse import unquote, unquote_plus


def rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def make_canaries() -> dict[str, str]:
    """Fresh, recognisable provider tokens for this run (valid shapes for every provider)."""
    return {
        "whatsapp": "cnry" + rand(28),
        "sendgrid": f"SG.cnry{rand(18)}.{rand(43)}",
        "sendgrid_rotated": f"SG.cnry{rand(18)}.{rand(43)}",
        "telegram": f"{secrets.randbelow(10**9) + 10**9}:cnry{rand(31)}",
        "instagram": "IGAAcnry" + rand(30),
        "google_calendar": "ya29.cnry" + rand(40),
        # The deployment's Meta app: the secret signs posts, the verify token is the handshake's.
        "meta_app_secret": "cnryMetaSecret" + rand(24),
        "meta_verify_token": "cnryVerify" + rand(24),
        # The deployment's OAuth clients ("Connect with Google / Instagram").
        "google_oauth_client_secret": "GOCSPX-cnry" + rand(24),
        "instagram_app_secret": "cnryIgApp" + rand(24),
    }


def fragments(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def count_leaks(text: str, tokens: dict[str, str]) -> int:
    """Occurrences of any token fragment (8 chars); a whole token counts once per fragment."""
    hits = 0
    for token in tokens.values():
        for frag in set(fragments(token)):
            hits += text.count(frag)
    return hits


_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")


def base64_views(text: str) -> str:
    """Every base64 (standard or URL-safe) run of `text`, decoded at each of its 4 offsets."""
    views = []
    for run in _BASE64_RUN.findall(text):
        run = run.rstrip("=").replace("-", "+").replace("_", "/")
        for start in range(4):
            chunk = run[start:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            if chunk:
                views.append(base64.b64decode(chunk).decode("latin-1"))
    return "\n".join(views)


def count_encoded_leaks(text: str, tokens: dict[str, str]) -> int:
    """Token fragments (8 chars) that only show once `text` is percent- or base64-decoded."""
    raw = count_leaks(text, tokens)
    hits = 0
    for decoded in {unquote(text), unquote_plus(text)}:
        hits += max(0, count_leaks(decoded, tokens) - raw)
        hits += count_leaks(base64_views(decoded), tokens)
    return hits


def decoded_bodies(text: str) -> list[str]:
    """Kombu messages keep the task body base64-encoded: decode it so the sweep sees it."""
    try:
        message = json.loads(text)
    except ValueError:
        return []
    if isinstance(message, list) and message and isinstance(message[0], str):
        try:
            message = json.loads(message[0])
        except ValueError:
            return []
    if not isinstance(message, dict) or "body" not in message:
        return []
    try:
        return [base64.b64decode(message["body"]).decode(errors="replace")]
    except (ValueError, TypeError):
        return []
