"""Validation and defaults for the provider accounts registered through /_sandbox/accounts."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

GOOGLE_DEFAULT_SCOPE = "https://www.googleapis.com/auth/calendar"


class AccountError(ValueError):
    """An account object is missing a field or has a malformed one."""


def _str(spec: dict[str, Any], name: str, *, required: bool = True, default: Any = None) -> Any:
    value = spec.get(name, default)
    if value is None:
        if required:
            raise AccountError(f"{name} is required")
        return None
    if not isinstance(value, str) or not value:
        raise AccountError(f"{name} must be a non-empty string")
    return value


def _str_list(spec: dict[str, Any], name: str, default: list[str] | None) -> list[str] | None:
    value = spec.get(name, default)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AccountError(f"{name} must be a list of strings")
    return list(value)


def _rate(spec: dict[str, Any]) -> float | None:
    value = spec.get("rate_per_second")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise AccountError("rate_per_second must be null or a positive number")
    return value


def _window(spec: dict[str, Any], default: float | None) -> float | None:
    value = spec.get("session_window_hours", default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise AccountError("session_window_hours must be null or a positive number")
    return value


_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]{1,16})\s*\}\}")


def content_template(spec: Any) -> dict[str, Any]:
    """One Content template `{"sid": "HX…", "body": "Hi {{1}}", "variables": {"1": "there"}}`;
    `variables` are its default sample values and must cover every placeholder."""
    if not isinstance(spec, dict):
        raise AccountError("a content template must be an object {sid, body, variables}")
    sid = spec.get("sid")
    if not isinstance(sid, str) or not _CONTENT_SID.fullmatch(sid):
        raise AccountError("content template sid must be HX followed by 32 hex digits")
    body = spec.get("body")
    if not isinstance(body, str) or not body:
        raise AccountError("content template body must be a non-empty string")
    variables = spec.get("variables") or {}
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in variables.items()
    ):
        raise AccountError("content template variables must map names to non-empty strings")
    missing = sorted(set(PLACEHOLDER.findall(body)) - set(variables))
    if missing:
        raise AccountError(f"content template {sid} has no default value for {missing}")
    return {"sid": sid, "body": body, "variables": dict(variables)}


def webhook_url(value: Any) -> str | None:
    """An http(s) URL for the sandbox to post events to, or None (events off)."""
    if value is None:
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise AccountError("event_webhook_url must be an http(s) URL or null")
    return value


def _whatsapp(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    sid = _str(spec, "account_sid")
    if not re.fullmatch(r"AC[0-9a-f]{32}", sid):
        raise AccountError("account_sid must be AC followed by 32 lowercase hex digits")
    api_keys = spec.get("api_keys") or {}
    if not isinstance(api_keys, dict):
        raise AccountError("api_keys must be an object {SK...: secret}")
    status = spec.get("status", "active")
    if status not in ("active", "suspended", "closed"):
        raise AccountError("status must be active, suspended or closed")
    templates = spec.get("content_templates") or []
    if not isinstance(templates, list):
        raise AccountError("content_templates must be a list of templates")
    return sid, {
        "provider": "whatsapp",
        "account_sid": sid,
        "auth_token": _str(spec, "auth_token"),
        "senders": _str_list(spec, "senders", []),
        "messaging_services": _str_list(spec, "messaging_services", None),
        "api_keys": api_keys,
        "friendly_name": _str(spec, "friendly_name", default="Corbi sandbox account"),
        "status": status,
        "type": spec.get("type", "Full"),
        "rate_per_second": _rate(spec),
        "session_window_hours": _window(spec, 24),
        "content_templates": [content_template(t) for t in templates],
    }


def _sendgrid(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    key = _str(spec, "api_key")
    return key, {
        "provider": "sendgrid",
        "api_key": key,
        "verified_senders": _str_list(spec, "verified_senders", None),
        "scopes": _str_list(spec, "scopes", ["mail.send"]),
        "rate_per_second": _rate(spec),
        "event_webhook_url": webhook_url(spec.get("event_webhook_url")),
    }


def _telegram(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    token = _str(spec, "token")
    if not re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token):
        raise AccountError("token must look like <bot id>:<secret>")
    username = _str(spec, "bot_username", default="corbi_sandbox_bot")
    return token, {
        "provider": "telegram",
        "token": token,
        "bot_username": username,
        "first_name": _str(spec, "first_name", default=username),
    }


def _instagram(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    # An account of an Instagram app (app_id + app_secret) may come without a token: it gets
    # its tokens through the OAuth endpoints (instagram_oauth.py).
    app_id = _str(spec, "app_id", required=False)
    app_secret = _str(spec, "app_secret", required=bool(app_id))
    token = _str(spec, "access_token", required=not app_id)
    ig_id = spec.get("ig_id")
    if isinstance(ig_id, int):
        ig_id = str(ig_id)
    if not isinstance(ig_id, str) or not ig_id.isdigit():
        raise AccountError("ig_id must be a numeric string")
    page_id = spec.get("page_id")
    if page_id is not None and not str(page_id).isdigit():
        raise AccountError("page_id must be a numeric string")
    return token or f"oauth:{app_id}:{ig_id}", {
        "provider": "instagram",
        "access_token": token,
        "app_id": app_id,
        "app_secret": app_secret,
        "ig_id": ig_id,
        "page_id": str(page_id) if page_id is not None else None,
        "username": _str(spec, "username", default="corbi.sandbox"),
        "name": _str(spec, "name", default="Corbi Sandbox"),
        "rate_per_second": _rate(spec),
        "session_window_hours": _window(spec, None),
    }


def _google(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    access = _str(spec, "access_token", required=False)
    refresh = _str(spec, "refresh_token", required=False)
    # A user of an OAuth client (client_id + client_secret alone) connects through the
    # authorize endpoint and gets its tokens there.
    oauth_user = not access and not refresh
    client_id = _str(spec, "client_id", required=bool(refresh) or oauth_user)
    client_secret = _str(spec, "client_secret", required=bool(refresh) or oauth_user)
    calendars = _str_list(spec, "calendars", ["primary"]) or ["primary"]
    email = _str(spec, "email", default="sandbox.user@sandbox.test")
    key = refresh or access or f"oauth:{client_id}:{email}"
    return key, {
        "provider": "google_calendar",
        "access_token": access,
        "refresh_token": refresh,
        "client_id": client_id,
        "client_secret": client_secret,
        "email": email,
        "calendars": calendars,
        "scope": _str(spec, "scope", default=GOOGLE_DEFAULT_SCOPE),
        "time_zone": _str(spec, "time_zone", default="UTC"),
        "rate_per_second": _rate(spec),
    }


_NORMALIZERS = {
    "whatsapp": _whatsapp,
    "sendgrid": _sendgrid,
    "telegram": _telegram,
    "instagram": _instagram,
    "google_calendar": _google,
}


def normalize_account(spec: Any) -> tuple[str, str, dict[str, Any]]:
    """(provider, registry key, account with defaults) for one account object."""
    if not isinstance(spec, dict):
        raise AccountError("an account must be a JSON object")
    provider = spec.get("provider")
    normalizer = _NORMALIZERS.get(provider)  # type: ignore[arg-type]
    if normalizer is None:
        raise AccountError(f"provider must be one of {sorted(_NORMALIZERS)}")
    key, account = normalizer(spec)
    return provider, key, account
