"""Bookings through the API: upsert, deterministic event ids, validation, cancel, read, auth."""

from __future__ import annotations

import re

import pytest

from shared.models import Booking
from shared.services.bookings import booking_event_id
from shared.services.integrations import integration_connect, integration_disconnect
from tests.factories import CANARY, VALID_EXTRA, assert_no_canary

pytestmark = pytest.mark.django_db

BASE32HEX = re.compile(r"^[a-v0-9]+$")

BOOKING = {
    "summary": "Dinner for four",
    "description": "Window table",
    "location": "Acme Bistro",
    "start": "2030-01-01T20:00:00+01:00",
    "end": "2030-01-01T22:00:00+01:00",
    "timezone": "Europe/Madrid",
    "attendees": ["carol@example.test", "dave@example.test"],
}


def url(booking_id):
    return f"/api/calendar/bookings/{booking_id}/"


def connect_calendar(member):
    integration_connect(
        organization=member.org,
        provider="google_calendar",
        token=CANARY["google_calendar"],
        extra=VALID_EXTRA["google_calendar"],
    )


@pytest.fixture
def acme(cast):
    """The cast with Google Calendar connected for acme."""
    connect_calendar(cast["admin"])
    return cast


def ok_body(response, status):
    assert response.status_code == status, response.content
    assert_no_canary(response.content.decode())
    return response.json()


def assert_error_envelope(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert_no_canary(response.content.decode())
    body = response.json()
    assert body["status"] == "error"
    assert body["ok"] is False
    assert isinstance(body["message"], str) and body["message"]
    return body


def put(client, booking_id, payload=None):
    return client.put(url(booking_id), BOOKING if payload is None else payload, format="json")


# --- upsert ----------------------------------------------------------------------------------


def test_put_queues_a_booking_with_a_deterministic_event_id(acme, client_for):
    body = ok_body(put(client_for(acme["admin"]), "bk-1001"), 202)

    assert body["status"] == "pending"
    assert body["booking_id"] == "bk-1001"
    assert body["version"] == 1 and body["synced_version"] == 0
    assert body["cancelled"] is False
    assert body["attendees"] == BOOKING["attendees"]
    assert body["event_id"] == booking_event_id(acme["admin"].org.pk, "bk-1001")
    assert BASE32HEX.match(body["event_id"])
    assert 5 <= len(body["event_id"]) <= 1024


def test_member_may_put_a_booking(acme, client_for):
    assert ok_body(put(client_for(acme["member"]), "bk-1"), 202)["status"] == "pending"


def test_put_again_bumps_the_version_and_keeps_one_row_and_the_event_id(acme, client_for):
    client = client_for(acme["admin"])
    first = ok_body(put(client, "bk-7"), 202)

    second = ok_body(put(client, "bk-7", {**BOOKING, "summary": "Dinner for six"}), 202)

    assert second["version"] == 2
    assert second["summary"] == "Dinner for six"
    assert second["event_id"] == first["event_id"]
    assert Booking.objects.filter(booking_id="bk-7").count() == 1


def test_same_booking_id_in_another_org_gets_a_different_event_id(acme, client_for):
    connect_calendar(acme["outsider"])

    ours = ok_body(put(client_for(acme["admin"]), "bk-shared"), 202)
    theirs = ok_body(put(client_for(acme["outsider"]), "bk-shared"), 202)

    assert ours["event_id"] != theirs["event_id"]
    assert BASE32HEX.match(theirs["event_id"])
    assert Booking.objects.filter(booking_id="bk-shared").count() == 2


def test_naive_times_are_read_in_the_booking_timezone(acme, client_for):
    payload = {**BOOKING, "start": "2030-07-01T20:00:00", "end": "2030-07-01T21:00:00"}

    ok_body(put(client_for(acme["admin"]), "bk-naive", payload), 202)

    booking = Booking.objects.get(booking_id="bk-naive")
    assert booking.start.utcoffset().total_seconds() == 0
    assert booking.start.hour == 18  # 20:00 in Madrid summer time (UTC+2)


def test_put_after_cancel_restores_the_booking(acme, client_for):
    client = client_for(acme["admin"])
    put(client, "bk-back")
    client.delete(url("bk-back"))

    body = ok_body(put(client, "bk-back"), 202)

    assert body["cancelled"] is False and body["version"] == 3


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "payload"),
    [
        ("summary", {k: v for k, v in BOOKING.items() if k != "summary"}),
        ("summary", {**BOOKING, "summary": "   "}),
        ("summary", {**BOOKING, "summary": "x" * 501}),
        ("start", {k: v for k, v in BOOKING.items() if k != "start"}),
        ("start", {**BOOKING, "start": "tomorrow at eight"}),
        ("end", {**BOOKING, "end": "2030-01-01T19:00:00+01:00"}),
        ("end", {**BOOKING, "end": BOOKING["start"]}),
        ("timezone", {**BOOKING, "timezone": "Mars/Olympus_Mons"}),
        ("timezone", {**BOOKING, "timezone": "../../etc/passwd"}),
        ("attendees.1", {**BOOKING, "attendees": ["carol@example.test", "not-an-email"]}),
        ("attendees", {**BOOKING, "attendees": "carol@example.test"}),
        ("attendees", {**BOOKING, "attendees": [f"g{i}@example.test" for i in range(51)]}),
        ("location", {**BOOKING, "location": "x" * 501}),
    ],
)
def test_invalid_booking_is_rejected_naming_the_field(acme, client_for, field, payload):
    body = assert_error_envelope(put(client_for(acme["admin"]), "bk-bad", payload), 400)

    assert field in body["errors"], body
    assert not Booking.objects.exists()


@pytest.mark.parametrize("booking_id", ["bad$id", "a%20b", "x" * 129])
def test_invalid_booking_id_is_rejected_naming_booking_id(acme, client_for, booking_id):
    body = assert_error_envelope(put(client_for(acme["admin"]), booking_id), 400)

    assert "booking_id" in body["errors"]
    assert not Booking.objects.exists()


def test_booking_id_of_128_allowed_characters_is_accepted(acme, client_for):
    booking_id = ("Ab0._:-" * 19)[:128]

    assert ok_body(put(client_for(acme["admin"]), booking_id), 202)["booking_id"] == booking_id


def test_booking_id_with_a_trailing_newline_is_rejected(acme, client_for):
    response = put(client_for(acme["admin"]), "bk-1%0A")

    assert_error_envelope(response, 400)
    assert not Booking.objects.exists()


def test_impossible_calendar_date_is_rejected_naming_start(acme, client_for):
    payload = {**BOOKING, "start": "2030-13-01T20:00:00+01:00"}

    body = assert_error_envelope(put(client_for(acme["admin"]), "bk-month", payload), 400)

    assert "start" in body["errors"]


def test_summary_with_a_nul_character_is_rejected_naming_summary(acme, client_for):
    payload = {**BOOKING, "summary": "Dinner\x00for four"}

    body = assert_error_envelope(put(client_for(acme["admin"]), "bk-nul", payload), 400)

    assert "summary" in body["errors"]


def test_calendar_not_connected_is_a_conflict(cast, client_for):
    body = assert_error_envelope(put(client_for(cast["admin"]), "bk-1"), 409)

    assert "google_calendar" in body["message"]
    assert not Booking.objects.exists()


def test_calendar_disconnected_is_a_conflict(acme, client_for):
    integration_disconnect(organization=acme["admin"].org, provider="google_calendar")

    assert_error_envelope(put(client_for(acme["admin"]), "bk-1"), 409)
    assert not Booking.objects.exists()


# --- cancel ----------------------------------------------------------------------------------


def test_delete_cancels_and_queues_the_deletion(acme, client_for):
    client = client_for(acme["admin"])
    created = ok_body(put(client, "bk-9"), 202)

    body = ok_body(client.delete(url("bk-9")), 202)

    assert body["cancelled"] is True
    assert body["status"] == "pending"
    assert body["version"] == 2
    assert body["event_id"] == created["event_id"]
    assert Booking.objects.get(booking_id="bk-9").cancelled is True


def test_delete_of_an_unknown_booking_is_not_found(acme, client_for):
    assert_error_envelope(client_for(acme["admin"]).delete(url("bk-missing")), 404)


def test_delete_after_the_calendar_was_disconnected_is_a_conflict(acme, client_for):
    client = client_for(acme["admin"])
    put(client, "bk-9")
    integration_disconnect(organization=acme["admin"].org, provider="google_calendar")

    assert_error_envelope(client.delete(url("bk-9")), 409)
    assert Booking.objects.get(booking_id="bk-9").cancelled is False


# --- read ------------------------------------------------------------------------------------


def test_get_returns_the_booking_with_its_status(acme, client_for):
    put(client_for(acme["admin"]), "bk-3")

    body = ok_body(client_for(acme["member"]).get(url("bk-3")), 200)

    assert body["booking_id"] == "bk-3"
    assert body["status"] == "pending"
    assert body["summary"] == BOOKING["summary"]


def test_get_of_an_unknown_booking_is_not_found(acme, client_for):
    assert_error_envelope(client_for(acme["admin"]).get(url("bk-missing")), 404)


# --- other orgs and anonymous callers ----------------------------------------------------------


def test_another_orgs_booking_is_not_found(acme, client_for):
    put(client_for(acme["admin"]), "bk-ours")
    outsider = client_for(acme["outsider"])

    assert_error_envelope(outsider.get(url("bk-ours")), 404)
    assert_error_envelope(outsider.delete(url("bk-ours")), 404)
    assert Booking.objects.get(booking_id="bk-ours").cancelled is False


def test_outsider_cannot_use_another_orgs_header(acme, client_for):
    put(client_for(acme["admin"]), "bk-ours")
    client = client_for(acme["outsider"], org_id=acme["admin"].org.pk)

    assert_error_envelope(client.get(url("bk-ours")), 404)
    assert_error_envelope(put(client, "bk-ours", {**BOOKING, "summary": "hijacked"}), 404)
    assert Booking.objects.get(booking_id="bk-ours").summary == BOOKING["summary"]


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_anonymous_caller_is_unauthorized(acme, client_for, method):
    put(client_for(acme["admin"]), "bk-anon")
    client = client_for(None, org_id=acme["admin"].org.pk)

    response = getattr(client, method)(url("bk-anon"), BOOKING, format="json")

    assert_error_envelope(response, 401)
    assert Booking.objects.get(booking_id="bk-anon").version == 1
