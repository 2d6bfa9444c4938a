"""shared.services.bookings called directly: validation, upsert/requeue, cancel, get, tenants."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Booking, BookingStatus
from shared.services.bookings import (
    booking_cancel,
    booking_event_id,
    booking_get,
    booking_upsert,
)
from shared.services.integrations import integration_disconnect
from shared.services.outbox import SYNC_BOOKING
from tests.factories import BOOKING, connect, make_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    """acme with Google Calendar connected."""
    return connect(make_member("acme", "alice", "admin"), "google_calendar").org


@pytest.fixture
def globex():
    """globex with Google Calendar connected."""
    return connect(make_member("globex", "mallory", "admin"), "google_calendar").org


def upsert(org, booking_id="bk-1", **changes):
    return booking_upsert(organization=org, booking_id=booking_id, data={**BOOKING, **changes})


# --- validation: every refusal names the field ----------------------------------------------

INVALID = [
    pytest.param("bad id!", {}, "booking_id", id="booking-id-characters"),
    pytest.param("x" * 129, {}, "booking_id", id="booking-id-too-long"),
    pytest.param("bk-1", {"summary": None}, "summary", id="summary-missing"),
    pytest.param("bk-1", {"summary": "   "}, "summary", id="summary-blank"),
    pytest.param("bk-1", {"summary": "x" * 501}, "summary", id="summary-too-long"),
    pytest.param("bk-1", {"summary": "a\x00b"}, "summary", id="summary-nul"),
    pytest.param("bk-1", {"timezone": "Mars/Olympus_Mons"}, "timezone", id="unknown-timezone"),
    pytest.param("bk-1", {"start": "tomorrow at eight"}, "start", id="start-not-iso"),
    pytest.param("bk-1", {"start": "2030-13-01T10:00:00"}, "start", id="start-impossible"),
    pytest.param("bk-1", {"end": None}, "end", id="end-missing"),
    pytest.param("bk-1", {"end": "2030-01-01T19:00:00+01:00"}, "end", id="end-before-start"),
    pytest.param("bk-1", {"description": 42}, "description", id="description-not-a-string"),
    pytest.param("bk-1", {"location": "x" * 501}, "location", id="location-too-long"),
    pytest.param("bk-1", {"attendees": "carol@example.test"}, "attendees", id="attendees-not-list"),
    pytest.param("bk-1", {"attendees": ["a@example.test", "nope"]}, "attendees.1", id="bad-email"),
]


@pytest.mark.parametrize(("booking_id", "changes", "field"), INVALID)
def test_invalid_input_is_refused_naming_the_field_and_stores_nothing(
    acme, published, booking_id, changes, field
):
    with pytest.raises(ValidationFailed) as caught:
        upsert(acme, booking_id, **changes)

    assert field in caught.value.errors
    assert caught.value.errors[field] and all(caught.value.errors[field])
    assert caught.value.message.startswith(f"{field}: ")
    assert not Booking.objects.exists()
    assert published() == []


def test_a_body_that_is_not_an_object_is_refused(acme):
    with pytest.raises(ValidationFailed) as caught:
        booking_upsert(organization=acme, booking_id="bk-1", data=["not", "an", "object"])
    assert list(caught.value.errors) == ["non_field_errors"]


def test_every_invalid_field_is_reported_at_once(acme):
    with pytest.raises(ValidationFailed) as caught:
        upsert(acme, summary="", timezone="Nowhere/Else", attendees=["x"])
    assert {"summary", "timezone", "attendees.0"} <= set(caught.value.errors)


# --- upsert -----------------------------------------------------------------------------------


def test_upsert_stores_a_pending_booking_and_publishes_its_sync(
    acme, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        booking = upsert(acme, "bk-1", start="2030-01-01T20:00:00", end="2030-01-01T22:00:00")

    booking.refresh_from_db()
    assert booking.status == BookingStatus.PENDING
    assert (booking.version, booking.synced_version, booking.cancelled) == (1, 0, False)
    assert booking.event_id == booking_event_id(acme.pk, "bk-1")
    # A naive time is read in the booking's own time zone (Madrid is UTC+1 in January).
    assert booking.start == datetime(2030, 1, 1, 19, 0, tzinfo=UTC)
    assert booking.summary == "Dinner for four" and booking.attendees == BOOKING["attendees"]
    assert booking.enqueued_at is not None and booking.next_attempt_at is not None
    assert published() == [(SYNC_BOOKING, [booking.pk])]


def test_the_sync_is_published_only_once_the_transaction_commits(
    acme, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upsert(acme, "bk-1")
    assert len(callbacks) == 1  # publishing waits for the commit
    assert published() == []


def test_upsert_twice_updates_the_row_bumps_the_version_and_requeues(
    acme, published, django_capture_on_commit_callbacks
):
    first = upsert(acme, "bk-1")
    Booking.objects.filter(pk=first.pk).update(
        status=BookingStatus.FAILED, attempts=5, last_error="Google said no", enqueued_at=None
    )
    before = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
        second = upsert(acme, "bk-1", summary="Dinner for six")

    second.refresh_from_db()
    assert second.pk == first.pk and Booking.objects.count() == 1
    assert second.version == 2
    assert second.summary == "Dinner for six"
    assert second.status == BookingStatus.PENDING
    assert (second.attempts, second.last_error) == (0, "")
    assert second.enqueued_at >= before and second.next_attempt_at >= before
    assert second.event_id == first.event_id
    assert published() == [(SYNC_BOOKING, [second.pk])]


def test_upsert_of_a_cancelled_booking_restores_it(acme):
    upsert(acme, "bk-1")
    booking_cancel(organization=acme, booking_id="bk-1")
    booking = upsert(acme, "bk-1")
    assert booking.cancelled is False
    assert booking.version == 3


# --- cancel and get ---------------------------------------------------------------------------


def test_cancel_marks_the_booking_cancelled_and_requeues_it(
    acme, published, django_capture_on_commit_callbacks
):
    booking = upsert(acme, "bk-1")
    published()
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = booking_cancel(organization=acme, booking_id="bk-1")

    cancelled.refresh_from_db()
    assert cancelled.pk == booking.pk
    assert cancelled.cancelled is True
    assert cancelled.version == 2 and cancelled.status == BookingStatus.PENDING
    assert published() == [(SYNC_BOOKING, [booking.pk])]


def test_cancel_of_an_unknown_booking_is_not_found(
    acme, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(NotFound):
        booking_cancel(organization=acme, booking_id="bk-missing")
    assert published() == []


def test_get_returns_the_booking_and_an_unknown_one_is_not_found(acme):
    booking = upsert(acme, "bk-1")
    assert booking_get(organization=acme, booking_id="bk-1").pk == booking.pk
    with pytest.raises(NotFound):
        booking_get(organization=acme, booking_id="bk-2")


# --- tenants ----------------------------------------------------------------------------------


def test_another_orgs_booking_is_invisible_and_untouchable(acme, globex):
    theirs = upsert(globex, "bk-1", summary="Globex offsite")

    with pytest.raises(NotFound):
        booking_get(organization=acme, booking_id="bk-1")
    with pytest.raises(NotFound):
        booking_cancel(organization=acme, booking_id="bk-1")

    ours = upsert(acme, "bk-1")
    theirs.refresh_from_db()
    assert ours.pk != theirs.pk
    assert ours.event_id != theirs.event_id
    assert (theirs.summary, theirs.version, theirs.cancelled) == ("Globex offsite", 1, False)
    assert booking_get(organization=globex, booking_id="bk-1").pk == theirs.pk


# --- calendar not connected -------------------------------------------------------------------


def test_upsert_without_a_connected_calendar_is_a_conflict_naming_the_provider(
    published, django_capture_on_commit_callbacks
):
    org = connect(make_member("initech", "peter", "admin"), "telegram").org  # not a calendar

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Conflict) as caught:
        upsert(org, "bk-1")

    assert "provider" in caught.value.errors
    assert not Booking.objects.exists()
    assert published() == []


def test_after_disconnecting_the_calendar_upsert_and_cancel_are_conflicts(acme):
    upsert(acme, "bk-1")
    integration_disconnect(organization=acme, provider="google_calendar")

    with pytest.raises(Conflict):
        upsert(acme, "bk-1", summary="changed")
    with pytest.raises(Conflict):
        booking_cancel(organization=acme, booking_id="bk-1")
    booking = booking_get(organization=acme, booking_id="bk-1")
    assert (booking.version, booking.cancelled) == (1, False)
