"""Webhook endpoint services: create, rotate, delete, redeliver, and disabling a failing one."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from shared.crypto import encrypt_token, token_fingerprint
from shared.errors import (
    Conflict,
    NotFound,
    UrlNotAllowed,
    WebhookEndpointDisabled,
    WebhookEndpointLimit,
)
from shared.events import publish_deliveries_on_commit
from shared.events.inputs import EndpointCreateSerializer
from shared.events.models import DeliveryStatus, EventDelivery, WebhookEndpoint
from shared.events.signing import new_secret
from shared.events.ssrf import UrlNotAllowed as Refused
from shared.events.ssrf import check_url
from shared.inputs import validated
from shared.models import Organization
from shared.services.audit import audit_event_record

logger = logging.getLogger(__name__)


def _audit(
    endpoint: WebhookEndpoint, action: str, actor: Any = None, secret: str = "", **data: Any
) -> None:
    audit_event_record(
        organization=endpoint.organization,
        actor=actor,
        action=action,
        token_fingerprint=token_fingerprint(secret) if secret else "",
        data={"endpoint_id": endpoint.pk, "host": urlsplit(endpoint.url).hostname, **data},
    )


def endpoint_get(*, organization: Organization, endpoint_id: int) -> WebhookEndpoint:
    """The organization's endpoint, or NotFound (also for another organization's)."""
    endpoint = WebhookEndpoint.objects.filter(organization=organization, pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("No such webhook endpoint in this organization.")
    return endpoint


def endpoint_create(
    *, organization: Organization, data: Any, actor: AbstractBaseUser | None = None
) -> tuple[WebhookEndpoint, str]:
    """Validate, SSRF-check and store a new endpoint; (endpoint, its secret in plaintext), the
    secret for the caller to show once. Audits `webhook_endpoint.created`."""
    cleaned = validated(EndpointCreateSerializer, data)
    try:
        check_url(cleaned["url"])
    except Refused as refused:
        raise UrlNotAllowed(f"url: {refused}", errors={"url": [str(refused)]}) from None
    secret = new_secret()
    with transaction.atomic():
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        if organization.webhook_endpoints.count() >= settings.WEBHOOK_MAX_ENDPOINTS:
            raise WebhookEndpointLimit(
                f"An organization has at most {settings.WEBHOOK_MAX_ENDPOINTS} webhook endpoints."
            )
        endpoint = WebhookEndpoint.objects.create(
            organization=organization,
            url=cleaned["url"],
            events=cleaned.get("events") or [],
            description=cleaned.get("description") or "",
            secret_encrypted=encrypt_token(secret),
        )
        _audit(endpoint, "webhook_endpoint.created", actor, secret=secret)
    return endpoint, secret


@transaction.atomic
def endpoint_rotate_secret(
    *, organization: Organization, endpoint_id: int, actor: AbstractBaseUser | None = None
) -> tuple[WebhookEndpoint, str]:
    """A new secret (returned once); the current one keeps signing as well for
    WEBHOOK_SECRET_GRACE_SECONDS (an older previous secret stops at once)."""
    endpoint = endpoint_get(organization=organization, endpoint_id=endpoint_id)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    secret = new_secret()
    grace = timedelta(seconds=settings.WEBHOOK_SECRET_GRACE_SECONDS)
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = timezone.now() + grace
    endpoint.secret_encrypted = encrypt_token(secret)
    endpoint.save()
    _audit(endpoint, "webhook_endpoint.secret_rotated", actor, secret=secret)
    return endpoint, secret


@transaction.atomic
def endpoint_delete(
    *, organization: Organization, endpoint_id: int, actor: AbstractBaseUser | None = None
) -> None:
    """Delete the endpoint and its delivery log; audits `webhook_endpoint.deleted`."""
    endpoint = endpoint_get(organization=organization, endpoint_id=endpoint_id)
    _audit(endpoint, "webhook_endpoint.deleted", actor)
    endpoint.delete()


@transaction.atomic
def delivery_redeliver(
    *, organization: Organization, endpoint_id: int, delivery_id: int
) -> EventDelivery:
    """Queue one delivery again now (same event id), whatever its status, unless it is being
    sent right now (409 conflict) or its endpoint is disabled (409 webhook_endpoint_disabled)."""
    endpoint = endpoint_get(organization=organization, endpoint_id=endpoint_id)
    delivery = (
        EventDelivery.objects.select_for_update().filter(endpoint=endpoint, pk=delivery_id).first()
    )
    if delivery is None:
        raise NotFound("No such delivery for this webhook endpoint.")
    if endpoint.disabled_at is not None:
        raise WebhookEndpointDisabled("The webhook endpoint is disabled; nothing was queued.")
    if delivery.status == DeliveryStatus.SENDING:
        raise Conflict("The delivery is being sent right now; try again in a minute.")
    now = timezone.now()
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = delivery.enqueued_at = now
    delivery.lease_expires_at = None
    delivery.save()
    publish_deliveries_on_commit([delivery.pk])
    return delivery


def endpoint_failing(endpoint: WebhookEndpoint, *, now: datetime) -> None:
    """Record a failed attempt: start the failure streak, and disable the endpoint once the
    streak is older than WEBHOOK_DISABLE_AFTER_SECONDS."""
    if endpoint.failing_since is None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
            failing_since=now
        )
        return
    window = timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    if now - endpoint.failing_since > window:
        since = endpoint.failing_since.astimezone(UTC)
        endpoint_disable(
            endpoint,
            f"Failing continuously since {since:%Y-%m-%d %H:%M} UTC "
            f"(more than {settings.WEBHOOK_DISABLE_AFTER_SECONDS} s).",
            now=now,
        )


def endpoint_disable(endpoint: WebhookEndpoint, reason: str, *, now: datetime) -> bool:
    """Disable the endpoint (once) and fail its pending deliveries; audits
    `webhook_endpoint.disabled`. False if it already was."""
    changed = WebhookEndpoint.objects.filter(pk=endpoint.pk, disabled_at__isnull=True).update(
        disabled_at=now, disabled_reason=reason[:200], updated_at=now
    )
    if not changed:
        return False
    endpoint.disabled_at, endpoint.disabled_reason = now, reason[:200]
    EventDelivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, last_error="The endpoint is disabled.", updated_at=now
    )
    _audit(endpoint, "webhook_endpoint.disabled", reason=reason[:200])
    logger.warning("Webhook endpoint %s disabled: %s", endpoint.pk, reason)
    return True
