"""Integration services: connect, disconnect and (with providers) test a provider connection."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from shared.crypto import encrypt_token, token_fingerprint
from shared.errors import NotFound
from shared.models import Integration, Organization
from shared.services.audit import audit_event_record
from shared.validation import validate_extra, validate_token


def integration_get(*, organization: Organization, provider: str) -> Integration:
    """The organization's integration for `provider`; raises NotFound when there is no row."""
    try:
        return Integration.objects.get(organization=organization, provider=provider)
    except Integration.DoesNotExist:
        raise NotFound(f"{provider} is not connected for this organization.") from None


@transaction.atomic
def integration_connect(
    *,
    organization: Organization,
    provider: str,
    token: Any,
    extra: Any,
    actor: AbstractBaseUser | None = None,
) -> Integration:
    """Create or overwrite the (org, provider) integration with an encrypted token; audits it."""
    token = validate_token(provider, token)
    cleaned = validate_extra(provider, extra)
    now = timezone.now()
    integration, created = Integration.objects.select_for_update().get_or_create(
        organization=organization, provider=provider
    )
    integration.token_encrypted = encrypt_token(token)
    integration.extra = cleaned
    integration.is_active = True
    integration.connected_at = now
    integration.credentials_rejected_at = None
    integration.last_error = ""
    integration.last_error_at = None
    integration.save()
    audit_event_record(
        organization=organization,
        actor=actor,
        action="integration.connected",
        provider=provider,
        token_fingerprint=token_fingerprint(token),
        data={"created": created},
    )
    return integration


@transaction.atomic
def integration_disconnect(
    *, organization: Organization, provider: str, actor: AbstractBaseUser | None = None
) -> Integration:
    """Soft-disconnect: keep the row, mark it inactive and erase the stored token; audits it."""
    try:
        integration = Integration.objects.select_for_update().get(
            organization=organization, provider=provider
        )
    except Integration.DoesNotExist:
        raise NotFound(f"{provider} is not connected for this organization.") from None
    integration.token_encrypted = ""
    integration.is_active = False
    integration.save(update_fields=["token_encrypted", "is_active", "updated_at"])
    audit_event_record(
        organization=organization,
        actor=actor,
        action="integration.disconnected",
        provider=provider,
    )
    return integration
