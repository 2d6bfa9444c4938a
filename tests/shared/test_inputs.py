"""shared.inputs: the one validation source of message and booking bodies, API or product code."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from shared.errors import ValidationFailed
from shared.inputs import (
    BookingRequestSerializer,
    MessageBulkSerializer,
    MessageCreateSerializer,
    validated,
)

TELEGRAM = {"provider": "telegram", "to": "4242", "body": "hi"}
EMAIL = {"provider": "sendgrid", "to": "ana@example.test", "subject": "Hi", "body": "x"}
BOOKING = {"summary": " Haircut ", "start": "2030-01-01T10:00:00", "end": "2030-01-01T11:00:00"}


def errors_of(serializer, data) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as caught:
        validated(serializer, data)
    return caught.value.errors


def test_absent_and_null_optional_texts_mean_empty():
    row = validated(MessageCreateSerializer, {**EMAIL, "html": None})

    assert (row["html"], row["idempotency_key"]) == ("", None)
    assert validated(MessageCreateSerializer, {**TELEGRAM, "subject": None})["subject"] == ""


def test_texts_and_keys_are_kept_exactly_as_sent_destinations_are_normalised():
    row = validated(
        MessageCreateSerializer,
        {
            **EMAIL,
            "subject": " Hi ",
            "body": " x\n",
            "to": " ana@example.test ",
            "idempotency_key": " k ",
        },
    )

    assert (row["subject"], row["body"], row["idempotency_key"]) == (" Hi ", " x\n", " k ")
    assert row["to"] == "ana@example.test"
    assert (
        validated(
            MessageCreateSerializer,
            {**TELEGRAM, "provider": "whatsapp", "to": "whatsapp:+14155550100"},
        )["to"]
        == "+14155550100"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"body": "a\ud800b"}, "body"),
        ({"body": "a\x00b"}, "body"),
        ({"to": 4242}, "to"),
        ({"body": 42}, "body"),
        ({"provider": "google_calendar"}, "provider"),
        ({"subject": "s"}, "subject"),
        ({"body": "x" * 4097}, "body"),
        ({"body": "   "}, "body"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
    ],
)
def test_a_product_code_message_gets_the_same_field_errors_as_the_api(change, field):
    assert field in errors_of(MessageCreateSerializer, {**TELEGRAM, **change})


def test_an_email_needs_a_subject_and_a_body_or_html():
    errors = errors_of(MessageCreateSerializer, {**EMAIL, "subject": " ", "body": ""})

    assert errors == {
        "subject": ["An email needs a subject."],
        "body": ["An email needs a body or html."],
    }
    assert validated(MessageCreateSerializer, {**EMAIL, "body": "", "html": "<p>x</p>"})


def test_bulk_errors_are_reported_by_index_and_item_shape_by_its_own_path():
    items = [TELEGRAM, "not an object", {**TELEGRAM, "to": "x"}]

    errors = errors_of(MessageBulkSerializer, {"messages": items})

    assert set(errors) == {"messages.1", "messages.2.to"}


def test_a_repeated_key_in_one_bulk_names_the_first_item():
    items = [{**TELEGRAM, "idempotency_key": "k"}, TELEGRAM, {**TELEGRAM, "idempotency_key": "k"}]

    errors = errors_of(MessageBulkSerializer, {"messages": items})

    assert errors == {
        "messages.2.idempotency_key": ["Repeats the key of message 0 in this request."]
    }


@pytest.mark.parametrize(
    ("messages", "problem"), [([], "at least 1"), ([TELEGRAM] * 1001, "no more than 1000")]
)
def test_bulk_size_is_bounded(messages, problem):
    assert problem in errors_of(MessageBulkSerializer, {"messages": messages})["messages"][0]


def test_a_naive_booking_time_is_read_in_the_booking_s_time_zone():
    row = validated(BookingRequestSerializer, {**BOOKING, "timezone": "Europe/Madrid"})

    assert row["start"] == datetime(2030, 1, 1, 10, tzinfo=ZoneInfo("Europe/Madrid"))
    assert row["summary"] == "Haircut"
    assert (row["description"], row["location"], row["attendees"]) == ("", "", [])


def test_an_aware_booking_time_keeps_its_offset_and_utc_is_the_default_zone():
    row = validated(BookingRequestSerializer, {**BOOKING, "start": "2030-01-01T10:00:00+01:00"})

    assert row["start"] == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert row["end"] == datetime(2030, 1, 1, 11, tzinfo=ZoneInfo("UTC"))
    assert row["timezone"] == "UTC"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"summary": ""}, "summary"),
        ({"summary": "x" * 501}, "summary"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"start": "2030-13-01T10:00:00"}, "start"),
        ({"start": "0999-01-01T10:00:00"}, "start"),
        ({"end": "2030-01-01T09:00:00"}, "end"),
        ({"attendees": ["ok@example.test", "nope"]}, "attendees.1"),
        ({"attendees": ["a@example.test"] * 51}, "attendees"),
        ({"location": 5}, "location"),
        ({"description": "x" * 8001}, "description"),
    ],
)
def test_booking_errors_name_the_field(change, field):
    assert field in errors_of(BookingRequestSerializer, {**BOOKING, **change})
