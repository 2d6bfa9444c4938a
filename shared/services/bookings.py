"""Bookings mirrored to Google Calendar: upsert/cancel requests and the idempotent sync."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from shared.crypto import TokenDecryptionError
from shared.delivery.claims import KEY_HELD, key_hold_fields
from shared.delivery.follow_ups import publish_follow_ups
from shared.delivery.scheduling import backoff_seconds
from shared.delivery.types import DeliveryOutcome, OutcomeStatus
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.events.announce import booking_finished
from shared.inputs import BookingRequestSerializer, validated
from shared.models import Booking, BookingStatus, Integration, Organization, Provider
from shared.providers.base import ProviderError
from shared.providers.google_calendar import GoogleCalendar
from shared.services.keys import ensure_token_decrypts
from shared.services.outbox import SYNC_BOOKING, booking_unpublish, publish_on_commit
from shared.services.providers import integration_adapter

logger = logging.getLogger(__name__)

BOOKING_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def booking_event_id(organization_id: int, booking_id: str) -> str:
    """The calendar event id of a booking: deterministic, so every replay hits the same event."""
    return GoogleCalendar.event_id_for(f"{organization_id}:{booking_id}")


def _calendar(organization: Organization) -> Integration:
    integration = (
        Integration.objects.filter(
            organization=organization, provider=Provider.GOOGLE_CALENDAR, is_active=True
        )
        .exclude(token_encrypted="")
        .first()
    )
    if integration is None:
        raise Conflict(
            "google_calendar is not connected for this organization; connect it before syncing bookings.",
            errors={"provider": ["google_calendar is not connected or inactive."]},
        )
    return integration


def _validate(booking_id: str, data: Any) -> dict[str, Any]:
    if not BOOKING_ID.fullmatch(booking_id or ""):
        raise ValidationFailed(
            "booking_id: use 1 to 128 letters, digits, '.', '_', ':' or '-'.",
            errors={"booking_id": ["Use 1 to 128 letters, digits, '.', '_', ':' or '-'."]},
        )
    return validated(BookingRequestSerializer, data)


def booking_upsert(*, organization: Organization, booking_id: str, data: Any) -> Booking:
    """Create or update a booking and enqueue its calendar sync (202 semantics)."""
    fields = _validate(booking_id, data)
    ensure_token_decrypts(_calendar(organization))
    now = timezone.now()
    with transaction.atomic():
        booking, created = Booking.objects.select_for_update().get_or_create(
            organization=organization,
            booking_id=booking_id,
            defaults={
                **fields,
                "event_id": booking_event_id(organization.pk, booking_id),
                "next_attempt_at": now,
                "enqueued_at": now,
            },
        )
        if not created:
            for name, value in fields.items():
                setattr(booking, name, value)
            booking.cancelled = False
            _requeue(booking, now)
            booking.save()
        publish_on_commit(SYNC_BOOKING, [booking.pk], on_failure=booking_unpublish)
    return booking


def booking_cancel(*, organization: Organization, booking_id: str) -> Booking:
    """Mark a booking cancelled and enqueue the event's deletion."""
    with transaction.atomic():
        booking = (
            Booking.objects.select_for_update()
            .filter(organization=organization, booking_id=booking_id)
            .first()
        )
        if booking is None:
            raise NotFound("Booking not found.")
        ensure_token_decrypts(_calendar(organization))
        booking.cancelled = True
        _requeue(booking, timezone.now())
        booking.save()
        publish_on_commit(SYNC_BOOKING, [booking.pk], on_failure=booking_unpublish)
    return booking


def booking_get(*, organization: Organization, booking_id: str) -> Booking:
    booking = Booking.objects.filter(organization=organization, booking_id=booking_id).first()
    if booking is None:
        raise NotFound("Booking not found.")
    return booking


def _requeue(booking: Booking, now: datetime) -> None:
    booking.version += 1
    booking.attempts = 0
    booking.last_error = ""
    booking.next_attempt_at = now
    booking.enqueued_at = now
    if booking.status != BookingStatus.SYNCING:
        booking.status = BookingStatus.PENDING


def _event_body(booking: Booking) -> dict[str, Any]:
    body: dict[str, Any] = {
        "summary": booking.summary,
        "start": {"dateTime": booking.start.isoformat(), "timeZone": booking.timezone},
        "end": {"dateTime": booking.end.isoformat(), "timeZone": booking.timezone},
    }
    if booking.description:
        body["description"] = booking.description
    if booking.location:
        body["location"] = booking.location
    if booking.attendees:
        body["attendees"] = [{"email": email} for email in booking.attendees]
    return body


def booking_sync(*, booking_pk: int) -> DeliveryOutcome:
    """Bring the calendar event in line with the booking (upsert or delete by its fixed id);
    a booking told to wait is published again after its delay."""
    outcome = _sync(booking_pk)
    publish_follow_ups(SYNC_BOOKING, {booking_pk: outcome})
    return outcome


def _sync(booking_pk: int) -> DeliveryOutcome:
    now = timezone.now()
    booking = Booking.objects.select_related("organization").filter(pk=booking_pk).first()
    if booking is None or booking.status != BookingStatus.PENDING:
        return DeliveryOutcome(OutcomeStatus.SKIPPED, reason="not pending")
    if booking.next_attempt_at and booking.next_attempt_at > now + timedelta(seconds=0.5):
        return DeliveryOutcome(OutcomeStatus.SKIPPED, reason="not due")
    claimed = Booking.objects.filter(
        pk=booking.pk, status=BookingStatus.PENDING, version=booking.version
    ).update(
        status=BookingStatus.SYNCING,
        attempts=F("attempts") + 1,
        lease_expires_at=now + timedelta(seconds=settings.DELIVERY_LEASE_SECONDS),
        updated_at=now,
    )
    if not claimed:
        return DeliveryOutcome(OutcomeStatus.SKIPPED, reason="claimed elsewhere")
    try:
        integration = _calendar(booking.organization)
        if integration.needs_reauth_at is not None:
            # No provider call until a person connects the calendar again.
            raise ProviderError(
                "Google Calendar needs to be connected again "
                f"({integration.needs_reauth_reason or 'credentials refused'})",
                kind="credentials",
                provider=Provider.GOOGLE_CALENDAR,
                code="needs_reauth",
            )
        adapter = integration_adapter(integration)
        if booking.cancelled:
            adapter.delete_event(f"{booking.organization_id}:{booking.booking_id}")
        else:
            adapter.upsert_event(
                f"{booking.organization_id}:{booking.booking_id}", _event_body(booking)
            )
    except Conflict as exc:
        error = ProviderError(exc.message, kind="permanent", provider=Provider.GOOGLE_CALENDAR)
    except TokenDecryptionError:
        return _hold_for_key(booking, now)
    except ProviderError as exc:
        error = exc
    else:
        error = None
    return _finish(booking, now, error)


def _hold_for_key(booking: Booking, now: datetime) -> DeliveryOutcome:
    """The calendar token does not decrypt: an operator must restore the FERNET_KEY. The booking
    waits pending (this attempt undone) and the sweeper re-checks it every SWEEPER_GRACE_SECONDS."""
    logger.error(
        "Booking %s held: the google_calendar token of organization %s does not decrypt with any "
        "FERNET_KEY; restore the FERNET_KEY that encrypted it.",
        booking.pk,
        booking.organization_id,
    )
    Booking.objects.filter(pk=booking.pk, status=BookingStatus.SYNCING).update(
        status=BookingStatus.PENDING,
        attempts=F("attempts") - 1,
        lease_expires_at=None,
        **key_hold_fields(now),
    )
    return KEY_HELD


def _finish(booking: Booking, now: datetime, error: ProviderError | None) -> DeliveryOutcome:
    mine = Q(pk=booking.pk, status=BookingStatus.SYNCING)
    changed = Booking.objects.filter(mine).exclude(version=booking.version)
    if changed.update(
        status=BookingStatus.PENDING, next_attempt_at=now, enqueued_at=now, lease_expires_at=None
    ):
        return DeliveryOutcome(OutcomeStatus.DEFERRED, delay=0.0, reason="changed while syncing")
    if error is None:
        with transaction.atomic():
            if Booking.objects.filter(mine).update(
                status=BookingStatus.SYNCED,
                synced_version=booking.version,
                synced_at=timezone.now(),
                last_error="",
                lease_expires_at=None,
            ):
                booking_finished(booking, synced=True)
        return DeliveryOutcome(OutcomeStatus.SENT)
    if error.rate_limited or (
        error.kind == "transient" and booking.attempts + 1 < settings.DELIVERY_MAX_RETRIES
    ):
        delay = (
            (error.retry_after or 1.0)
            if error.rate_limited
            else backoff_seconds(booking.attempts + 1)
        )
        in_broker = delay <= settings.MAX_COUNTDOWN_SECONDS
        Booking.objects.filter(mine).update(
            status=BookingStatus.PENDING,
            last_error=error.message[:500],
            next_attempt_at=now + timedelta(seconds=delay),
            enqueued_at=now if in_broker else None,
            lease_expires_at=None,
        )
        return DeliveryOutcome(
            OutcomeStatus.DEFERRED, delay=delay if in_broker else None, reason=error.kind
        )
    with transaction.atomic():
        if Booking.objects.filter(mine).update(
            status=BookingStatus.FAILED, last_error=error.message[:500], lease_expires_at=None
        ):
            booking_finished(booking, synced=False, reason=error.message)
    return DeliveryOutcome(OutcomeStatus.FAILED, reason=error.kind)
