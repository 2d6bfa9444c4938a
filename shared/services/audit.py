"""Audit trail: one persisted row and one `corbi.audit` JSON log line per event."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from shared.models import AuditEvent, Organization

logger = logging.getLogger("corbi.audit")


def audit_event_record(
    *,
    organization: Organization,
    action: str,
    actor: AbstractBaseUser | None = None,
    provider: str = "",
    token_fingerprint: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Persist an audit event named `<entity>.<past verb>` and log it as one JSON record."""
    event = AuditEvent.objects.create(
        organization=organization,
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        provider=provider,
        token_fingerprint=token_fingerprint,
        data=data or {},
    )
    logger.info(
        action,
        extra={
            "audit": {
                "event": action,
                "id": event.pk,
                "org_id": organization.pk,
                "org": organization.slug,
                "user": getattr(actor, "username", None) if actor is not None else None,
                "provider": provider,
                "token_fingerprint": token_fingerprint,
                "time": event.created_at.isoformat(),
                **(data or {}),
            }
        },
    )
    return event
