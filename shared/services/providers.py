"""Build a provider adapter for a stored integration: settings → base URL, row → credentials."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from shared.models import Integration, Provider
from shared.providers.base import Provider as Adapter
from shared.providers.registry import build_adapter
from shared.services.keys import integration_token


def provider_endpoint(slug: str) -> tuple[str, dict[str, Any]]:
    """(base_url, extra adapter options) for `slug` from settings (PROVIDER_SANDBOX_URL aware)."""
    if slug == Provider.WHATSAPP:
        return settings.TWILIO_API_BASE, {}
    if slug == Provider.SENDGRID:
        return settings.SENDGRID_API_BASE, {}
    if slug == Provider.TELEGRAM:
        return settings.TELEGRAM_API_BASE, {}
    if slug == Provider.INSTAGRAM:
        return settings.GRAPH_API_BASE, {}
    if slug == Provider.GOOGLE_CALENDAR:
        return settings.GOOGLE_CALENDAR_API_BASE, {"token_uri": settings.GOOGLE_TOKEN_URI}
    raise KeyError(slug)


def integration_adapter(
    integration: Integration,
    *,
    timeout: float | None = None,
    extra_override: dict | None = None,
    token: str | None = None,
) -> Adapter:
    """An adapter holding the integration's freshly decrypted token (build one per task/call).

    `token` is the already decrypted token when the caller decrypted it once for several sends.
    """
    base_url, options = provider_endpoint(integration.provider)
    return build_adapter(
        integration.provider,
        token=integration_token(integration) if token is None else token,
        extra={**integration.extra, **(extra_override or {})},
        base_url=base_url,
        timeout=settings.PROVIDER_TIMEOUT_SECONDS if timeout is None else timeout,
        **options,
    )
