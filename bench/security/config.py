"""The security run's settings, provider accounts and echo bodies."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DB_NAME = os.environ.get("SECURITY_DB", "corbi_security")
REDIS_URL = os.environ.get("SECURITY_REDIS_URL", "redis://127.0.0.1:6379/11")
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
PROVIDERS = ["whatsapp", "sendgrid", "telegram", "instagram", "google_calendar"]
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
FROM_WHATSAPP = "+14155238886"
IG_ID = "17841400000000001"
# The encrypted columns the sweep skips: provider tokens and endpoint signing secrets.
CIPHERTEXT = {
    ("shared_integration", "token_encrypted"),
    ("shared_webhookendpoint", "secret_encrypted"),
    ("shared_webhookendpoint", "previous_secret_encrypted"),
    ("shared_message", "attachments_encrypted"),
    ("shared_integration", "access_token_encrypted"),
    ("shared_oauthstate", "verifier_encrypted"),
}
ROTATION_MESSAGES = 300
EXAMPLES = int(os.environ.get("SECURITY_MAX_EXAMPLES", "12"))
GOOGLE_JSON_KEYS = ("client_id", "client_secret", "refresh_token")


# Fault bodies whose strings the sandbox fills from the request it received (sandbox/control.py).
ECHO = (
    "echo: header {authorization|urlencode} | credential {credential|urlencode} "
    "{credential|base64} | path {path|urlencode} {path|base64}"
)
ECHO_BODIES = {
    "whatsapp": {"code": 21211, "message": ECHO, "more_info": "https://x.test", "status": 400},
    "sendgrid": {"errors": [{"message": ECHO, "field": "to", "help": None}]},
    "telegram": {"ok": False, "error_code": 400, "description": "Bad Request: " + ECHO},
    "instagram": {"error": {"message": ECHO, "type": "OAuthException", "code": 100}},
    "google_calendar": {"error": {"code": 400, "message": ECHO, "errors": [{"reason": "x"}]}},
}


def extra_for(provider: str) -> dict:
    return {
        "whatsapp": {"account_sid": ACCOUNT_SID, "from_whatsapp": FROM_WHATSAPP},
        "sendgrid": {"from_email": "noreply@secorg.test", "rate_limit_per_second": 1000},
        "telegram": {"rate_limit_per_second": 1000},
        "instagram": {"instagram_scoped_id": IG_ID, "rate_limit_per_second": 1000},
        "google_calendar": {},
    }[provider]


def sandbox_accounts(tokens: dict[str, str]) -> list[dict]:
    return [
        {
            "provider": "whatsapp",
            "account_sid": ACCOUNT_SID,
            "auth_token": tokens["whatsapp"],
            "senders": ["whatsapp:" + FROM_WHATSAPP],
            "session_window_hours": None,  # a load account: every recipient is in session
        },
        {"provider": "sendgrid", "api_key": tokens["sendgrid"]},
        {"provider": "sendgrid", "api_key": tokens["sendgrid_rotated"]},
        {"provider": "telegram", "token": tokens["telegram"]},
        {"provider": "instagram", "access_token": tokens["instagram"], "ig_id": IG_ID},
        {"provider": "google_calendar", "access_token": tokens["google_calendar"]},
    ]
