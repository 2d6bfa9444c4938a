"""Build a provider adapter for a stored integration: settings → base URL, row → credentials."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from shared.models import Integration, Provider
from shared.providers.base import ProviderAdapter
from shared.providers.registry import build_adapter, spec_for
from shared.services.keys import integration_token
from shared.services.tokens import google_adapter_options


def provider_endpoint(slug: str) -> tuple[str, dict[str, Any]]:
    """(base_url, extra adapter options) for `slug`, read from the settings its spec names."""
    spec = spec_for(slug)
    options = {option: getattr(settings, name) for option, name in spec.adapter_settings.items()}
    return getattr(settings, spec.base_url_setting), options


def integration_adapter(
    integration: Integration,
    *,
    timeout: float | None = None,
    extra_override: dict | None = None,
    token: str | None = None,
) -> ProviderAdapter:
    """An adapter holding the integration's freshly decrypted token (build one per task/call).

    `token` is the already decrypted token when the caller decrypted it once for several sends.
    """
    base_url, options = provider_endpoint(integration.provider)
    token = integration_token(integration) if token is None else token
    if integration.provider == Provider.GOOGLE_CALENDAR:
        # A refreshable token: the saved access token and the shared, locked refresh.
        options.update(google_adapter_options(integration, token))
    return build_adapter(
        integration.provider,
        token=token,
        extra={**integration.extra, **(extra_override or {})},
        base_url=base_url,
        timeout=settings.PROVIDER_TIMEOUT_SECONDS if timeout is None else timeout,
        **options,
    )
