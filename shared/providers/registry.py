"""The explicit slug → adapter table, and the one way to build an adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Provider
from .google_calendar import GoogleCalendar
from .instagram import InstagramGraph
from .sendgrid import SendGridEmail
from .telegram import TelegramBot
from .whatsapp import TwilioWhatsApp

PROVIDERS: dict[str, type[Provider]] = {
    "whatsapp": TwilioWhatsApp,
    "sendgrid": SendGridEmail,
    "telegram": TelegramBot,
    "instagram": InstagramGraph,
    "google_calendar": GoogleCalendar,
}
SLUGS: tuple[str, ...] = tuple(PROVIDERS)


def build_adapter(
    slug: str,
    *,
    token: str,
    extra: Mapping[str, Any],
    base_url: str,
    timeout: float,
    **options: Any,
) -> Provider:
    """Return the adapter for `slug`; raise KeyError (unknown slug) or ProviderError."""
    try:
        adapter_class = PROVIDERS[slug]
    except KeyError:
        raise KeyError(f"unknown provider {slug!r}; expected one of {SLUGS}") from None
    return adapter_class(token=token, extra=extra, base_url=base_url, timeout=timeout, **options)
