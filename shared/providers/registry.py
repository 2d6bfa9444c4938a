"""The one list of adapters; every per-provider table in the app is derived from their specs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import ProviderAdapter
from .google_calendar import GoogleCalendar
from .instagram import InstagramGraph
from .sendgrid import SendGridEmail
from .spec import ProviderSpec
from .telegram import TelegramBot
from .whatsapp import TwilioWhatsApp

ADAPTERS: tuple[type[ProviderAdapter], ...] = (
    TwilioWhatsApp,
    SendGridEmail,
    TelegramBot,
    InstagramGraph,
    GoogleCalendar,
)
PROVIDERS: dict[str, type[ProviderAdapter]] = {adapter.slug: adapter for adapter in ADAPTERS}
SPECS: dict[str, ProviderSpec] = {adapter.slug: adapter.spec for adapter in ADAPTERS}
SLUGS: tuple[str, ...] = tuple(PROVIDERS)
# The providers that deliver messages (the others, like Google Calendar, sync bookings).
MESSAGING_SLUGS: tuple[str, ...] = tuple(s for s, spec in SPECS.items() if spec.messages)


def spec_for(slug: str) -> ProviderSpec:
    """The spec of `slug`; raise KeyError naming the known slugs."""
    try:
        return SPECS[slug]
    except KeyError:
        raise KeyError(f"unknown provider {slug!r}; expected one of {SLUGS}") from None


def build_adapter(
    slug: str,
    *,
    token: str,
    extra: Mapping[str, Any],
    base_url: str,
    timeout: float,
    **options: Any,
) -> ProviderAdapter:
    """Return the adapter for `slug`; raise KeyError (unknown slug) or ProviderError."""
    adapter_class = PROVIDERS[spec_for(slug).slug]
    return adapter_class(token=token, extra=extra, base_url=base_url, timeout=timeout, **options)
