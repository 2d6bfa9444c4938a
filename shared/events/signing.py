"""Endpoint signing secrets (`whsec_` + base64 of 32 random bytes) and Standard Webhooks
signatures: one `v1,` entry per live secret, so a rotated-out secret verifies until its grace
period ends."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

from standardwebhooks import Webhook

from shared.crypto import decrypt_token
from shared.events.models import WebhookEndpoint

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret, shown to the caller once and stored only encrypted."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def live_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The current secret and, within its grace period, the previous one (plaintext, in the
    worker only). Raises shared.crypto.TokenDecryptionError when a FERNET_KEY is missing."""
    found = [decrypt_token(endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > now:
        found.append(decrypt_token(endpoint.previous_secret_encrypted))
    return found


def signature_header(secrets: list[str], msg_id: str, at: datetime, body: str) -> str:
    """The `webhook-signature` value: space-separated `v1,<base64>` entries, one per secret.
    `at` must be the same instant sent as `webhook-timestamp` (converted to UTC here, since
    the library reads any datetime as if it were UTC)."""
    at = at.astimezone(UTC)
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)
