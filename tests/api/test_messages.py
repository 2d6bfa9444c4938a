"""api.messages: messages (create, idempotency, validation, bulk, list, detail, retry) and bookings."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from shared.models import Booking, Message, MessageAttempt, MessageStatus
from shared.providers.registry import MESSAGING_SLUGS as MESSAGING_PROVIDERS
from shared.providers.registry import SPECS
from shared.services.bookings import booking_event_id
from shared.services.integrations import integration_disconnect
from tests.factories import (
    BAD_DESTINATIONS,
    BOOKING,
    assert_error_envelope,
    connect,
    ok_body,
)

pytestmark = pytest.mark.django_db

MESSAGES = "/api/messages/"
BULK = "/api/messages/bulk/"

VALID = {
    "whatsapp": {"provider": "whatsapp", "to": "+14155550123", "body": "Your table is ready."},
    "sendgrid": {
        "provider": "sendgrid",
        "to": "carol@example.test",
        "subject": "Your booking",
        "body": "See you at 8.",
    },
    "telegram": {"provider": "telegram", "to": "123456789", "body": "Your table is ready."},
    "instagram": {"provider": "instagram", "to": "17841400000000002", "body": "Thanks!"},
}


@pytest.fixture
def acme(cast):
    """The cast with every messaging provider connected for acme."""
    connect(cast["admin"], *MESSAGING_PROVIDERS)
    return cast


def post(client, payload):
    return client.post(MESSAGES, payload, format="json")


def post_bulk(client, items):
    return client.post(BULK, {"messages": items}, format="json")


def make_message(member, status=MessageStatus.QUEUED, provider="telegram", **fields):
    message = Message.objects.create(
        organization=member.org,
        integration=member.org.integrations.get(provider=provider),
        provider=provider,
        to=VALID[provider]["to"],
        body="hello",
        status=status,
        **fields,
    )
    return message


# --- create ----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", MESSAGING_PROVIDERS)
def test_admin_queues_a_message_for_each_provider(acme, client_for, provider):
    response = post(client_for(acme["admin"]), VALID[provider])

    body = ok_body(response, 202)
    assert body["status"] == "ok" and body["ok"] is True and body["message"]
    assert body["data"]["status"] == "queued"
    assert body["data"]["provider"] == provider
    row = Message.objects.get(pk=body["message_id"])
    assert row.organization == acme["admin"].org
    assert row.status == MessageStatus.QUEUED and row.attempts == 0
    assert body["data"]["id"] == row.pk


def test_member_may_send_a_message(acme, client_for):
    response = post(client_for(acme["member"]), VALID["telegram"])

    assert ok_body(response, 202)["data"]["status"] == "queued"


def test_whatsapp_prefix_is_stripped_from_the_destination(acme, client_for):
    payload = {**VALID["whatsapp"], "to": "whatsapp:+14155550123"}

    body = ok_body(post(client_for(acme["admin"]), payload), 202)

    assert body["data"]["to"] == "+14155550123"


def test_same_idempotency_key_and_request_returns_the_same_message_with_200(acme, client_for):
    client = client_for(acme["admin"])
    payload = {**VALID["telegram"], "idempotency_key": "order-42-ready"}

    first = ok_body(post(client, payload), 202)
    second = ok_body(post(client, payload), 200)

    assert second["message_id"] == first["message_id"]
    assert second["data"] == first["data"]
    assert Message.objects.filter(idempotency_key="order-42-ready").count() == 1


def test_idempotency_keys_are_scoped_to_the_organization(acme, client_for):
    connect(acme["outsider"], "telegram")
    payload = {**VALID["telegram"], "idempotency_key": "shared-key"}

    ours = ok_body(post(client_for(acme["admin"]), payload), 202)
    theirs = ok_body(post(client_for(acme["outsider"]), payload), 202)

    assert ours["message_id"] != theirs["message_id"]
    assert Message.objects.filter(idempotency_key="shared-key").count() == 2


@pytest.mark.parametrize(("provider", "to"), BAD_DESTINATIONS)
def test_invalid_destination_is_rejected_naming_to(acme, client_for, provider, to):
    response = post(client_for(acme["admin"]), {**VALID[provider], "to": to})

    body = assert_error_envelope(response, 400)
    assert "to" in body["errors"]
    assert not Message.objects.exists()


@pytest.mark.parametrize("provider", MESSAGING_PROVIDERS)
def test_body_at_the_provider_limit_is_accepted(acme, client_for, provider):
    payload = {**VALID[provider], "body": "x" * SPECS[provider].messages.body_limit}

    ok_body(post(client_for(acme["admin"]), payload), 202)


@pytest.mark.parametrize("provider", MESSAGING_PROVIDERS)
def test_body_over_the_provider_limit_is_rejected_naming_body(acme, client_for, provider):
    payload = {**VALID[provider], "body": "x" * (SPECS[provider].messages.body_limit + 1)}

    body = assert_error_envelope(post(client_for(acme["admin"]), payload), 400)

    assert "body" in body["errors"]
    assert not Message.objects.exists()


def test_email_without_subject_is_rejected_naming_subject(acme, client_for):
    payload = {k: v for k, v in VALID["sendgrid"].items() if k != "subject"}

    body = assert_error_envelope(post(client_for(acme["admin"]), payload), 400)

    assert "subject" in body["errors"]


def test_email_with_a_blank_subject_is_rejected_naming_subject(acme, client_for):
    payload = {**VALID["sendgrid"], "subject": "   "}

    body = assert_error_envelope(post(client_for(acme["admin"]), payload), 400)

    assert "subject" in body["errors"]


def test_text_message_without_body_is_rejected_naming_body(acme, client_for):
    payload = {"provider": "telegram", "to": "123456789"}

    body = assert_error_envelope(post(client_for(acme["admin"]), payload), 400)

    assert "body" in body["errors"]


@pytest.mark.parametrize("provider", ["google_calendar", "sms", "", None])
def test_provider_that_does_not_send_messages_is_rejected_naming_provider(
    acme, client_for, provider
):
    payload = {**VALID["telegram"], "provider": provider}

    body = assert_error_envelope(post(client_for(acme["admin"]), payload), 400)

    assert "provider" in body["errors"]


def test_provider_never_connected_is_a_conflict(cast, client_for):
    response = post(client_for(cast["admin"]), VALID["whatsapp"])

    body = assert_error_envelope(response, 409)
    assert "whatsapp" in body["message"]
    assert not Message.objects.exists()


def test_disconnected_provider_is_a_conflict(acme, client_for):
    integration_disconnect(organization=acme["admin"].org, provider="telegram")

    body = assert_error_envelope(post(client_for(acme["admin"]), VALID["telegram"]), 409)

    assert "telegram" in body["message"]
    assert not Message.objects.exists()


def test_a_provider_connected_only_in_another_org_is_a_conflict(cast, client_for):
    connect(cast["outsider"], "telegram")

    assert_error_envelope(post(client_for(cast["admin"]), VALID["telegram"]), 409)


def test_read_only_fields_in_the_request_change_nothing(acme, client_for):
    outsider_org = acme["outsider"].org
    payload = {
        **VALID["telegram"],
        "id": 987654,
        "status": "sent",
        "provider_message_id": "forged-provider-id",
        "organization": outsider_org.pk,
        "created_at": "2001-01-01T00:00:00Z",
        "attempts": 7,
        "retries": 3,
        "last_error": "forged",
    }

    body = ok_body(post(client_for(acme["admin"]), payload), 202)

    row = Message.objects.get(pk=body["message_id"])
    assert row.pk != 987654
    assert row.status == MessageStatus.QUEUED
    assert row.attempts == 0 and row.retries == 0
    assert row.provider_message_id == "" and row.last_error == ""
    assert row.organization == acme["admin"].org
    assert row.created_at > timezone.now() - timedelta(minutes=5)
    assert not Message.objects.filter(organization=outsider_org).exists()


def test_anonymous_cannot_send(acme, client_for):
    response = post(client_for(None, org_id=acme["admin"].org.pk), VALID["telegram"])

    assert_error_envelope(response, 401)


def test_outsider_cannot_send_as_another_org(acme, client_for):
    client = client_for(acme["outsider"], org_id=acme["admin"].org.pk)

    assert_error_envelope(post(client, VALID["telegram"]), 404)
    assert not Message.objects.exists()


# --- bulk ------------------------------------------------------------------------------------


def test_bulk_queues_a_thousand_messages(acme, client_for):
    items = [{**VALID["telegram"], "idempotency_key": f"k-{i}"} for i in range(1000)]

    body = ok_body(post_bulk(client_for(acme["member"]), items), 202)

    assert body["created"] == 1000 and body["existing"] == 0
    assert len(body["messages"]) == 1000
    assert all(item["created"] and item["status"] == "queued" for item in body["messages"])
    assert Message.objects.filter(organization=acme["admin"].org).count() == 1000


def test_bulk_of_a_thousand_and_one_is_rejected_and_writes_nothing(acme, client_for):
    items = [VALID["telegram"]] * 1001

    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), items), 400)

    assert "messages" in body["errors"]
    assert not Message.objects.exists()


def test_empty_bulk_is_rejected(acme, client_for):
    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), []), 400)

    assert "messages" in body["errors"]


def test_bulk_reports_every_invalid_item_by_index_and_writes_nothing(acme, client_for):
    items = [dict(VALID[MESSAGING_PROVIDERS[i % 4]]) for i in range(600)]
    items[7]["to"] = "not a destination"
    items[500]["body"] = "x" * (SPECS[items[500]["provider"]].messages.body_limit + 1)

    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), items), 400)

    assert set(body["errors"]) == {"messages.7.to", "messages.500.body"}
    assert body["message"].startswith("messages.7.to")
    assert not Message.objects.exists()


def test_bulk_rejects_a_provider_that_does_not_send_messages_by_index(acme, client_for):
    items = [VALID["telegram"], {**VALID["telegram"], "provider": "google_calendar"}]

    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), items), 400)

    assert "messages.1.provider" in body["errors"]
    assert not Message.objects.exists()


def test_bulk_rejects_an_item_that_is_not_an_object(acme, client_for):
    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), [VALID["telegram"], 7]), 400)

    assert any(key.startswith("messages.1") for key in body["errors"])
    assert not Message.objects.exists()


def test_single_message_with_a_nul_character_is_rejected_naming_body(acme, client_for):
    payload = {**VALID["telegram"], "body": "ready\x00now"}

    body = assert_error_envelope(post(client_for(acme["admin"]), payload), 400)

    assert "body" in body["errors"]


def test_bulk_item_with_a_nul_character_is_rejected_by_index(acme, client_for):
    items = [VALID["telegram"], {**VALID["telegram"], "body": "ready\x00now"}]

    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), items), 400)

    assert "messages.1.body" in body["errors"]
    assert not Message.objects.exists()


def test_bulk_telegram_chat_id_integer_is_bounded_like_the_string_form(acme, client_for):
    items = [{**VALID["telegram"], "to": 12345678901234567890123}]

    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), items), 400)

    assert "messages.0.to" in body["errors"]


def test_bulk_rejects_a_key_repeated_within_the_request_on_the_second_index(acme, client_for):
    items = [
        {**VALID["telegram"], "idempotency_key": "a"},
        {**VALID["telegram"], "idempotency_key": "b"},
        {**VALID["whatsapp"], "idempotency_key": "a"},
    ]

    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), items), 400)

    assert set(body["errors"]) == {"messages.2.idempotency_key"}
    assert not Message.objects.exists()


def test_bulk_returns_existing_keys_as_existing_without_new_rows(acme, client_for):
    client = client_for(acme["admin"])
    earlier = ok_body(post(client, {**VALID["telegram"], "idempotency_key": "seen"}), 202)
    items = [
        {**VALID["telegram"], "idempotency_key": "seen"},
        {**VALID["sendgrid"], "idempotency_key": "fresh"},
    ]

    body = ok_body(post_bulk(client, items), 202)

    assert body["created"] == 1 and body["existing"] == 1
    assert body["messages"][0] == {
        "id": earlier["message_id"],
        "status": "queued",
        "created": False,
    }
    assert body["messages"][1]["created"] is True
    assert Message.objects.count() == 2
    assert Message.objects.filter(idempotency_key="seen").count() == 1


def test_bulk_with_an_unconnected_provider_is_a_conflict_and_writes_nothing(cast, client_for):
    connect(cast["admin"], "telegram")
    items = [VALID["telegram"], VALID["instagram"]]

    body = assert_error_envelope(post_bulk(client_for(cast["admin"]), items), 409)

    assert "instagram" in body["message"]
    assert not Message.objects.exists()


# --- list ------------------------------------------------------------------------------------


def test_list_is_paginated(acme, client_for):
    for _ in range(3):
        make_message(acme["admin"])

    body = ok_body(client_for(acme["member"]).get(MESSAGES, {"page_size": 2}), 200)

    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"]


def test_list_filters_by_status_and_provider(acme, client_for):
    admin = acme["admin"]
    failed = make_message(admin, status=MessageStatus.FAILED, provider="whatsapp")
    make_message(admin, status=MessageStatus.QUEUED, provider="whatsapp")
    email = make_message(admin, status=MessageStatus.SENT, provider="sendgrid")
    client = client_for(admin)

    by_status = ok_body(client.get(MESSAGES, {"status": "failed"}), 200)
    by_provider = ok_body(client.get(MESSAGES, {"provider": "sendgrid"}), 200)
    both = ok_body(client.get(MESSAGES, {"status": "queued", "provider": "sendgrid"}), 200)

    assert [m["id"] for m in by_status["results"]] == [failed.pk]
    assert [m["id"] for m in by_provider["results"]] == [email.pk]
    assert both["count"] == 0


@pytest.mark.parametrize("status", ["delivered", "read", "undelivered", "bounced"])
def test_list_filters_on_the_statuses_receipts_set(acme, client_for, status):
    admin = acme["admin"]
    wanted = make_message(admin, status=status, provider="whatsapp")
    make_message(admin, status=MessageStatus.SENT, provider="whatsapp")

    body = ok_body(client_for(admin).get(MESSAGES, {"status": status}), 200)

    assert [m["id"] for m in body["results"]] == [wanted.pk]


def test_list_never_shows_another_orgs_messages(acme, client_for):
    connect(acme["outsider"], "telegram")
    ours = make_message(acme["admin"])
    theirs = make_message(acme["outsider"])

    our_ids = [m["id"] for m in ok_body(client_for(acme["member"]).get(MESSAGES), 200)["results"]]
    their_ids = [
        m["id"] for m in ok_body(client_for(acme["outsider"]).get(MESSAGES), 200)["results"]
    ]

    assert our_ids == [ours.pk]
    assert their_ids == [theirs.pk]


def test_outsider_cannot_list_another_orgs_messages_by_header(acme, client_for):
    make_message(acme["admin"])
    client = client_for(acme["outsider"], org_id=acme["admin"].org.pk)

    assert_error_envelope(client.get(MESSAGES), 404)


# --- detail ----------------------------------------------------------------------------------


def test_detail_shows_the_attempt_log_and_interrupted_attempts(acme, client_for):
    message = make_message(acme["admin"], status=MessageStatus.FAILED, attempts=3)
    started = timezone.now()
    MessageAttempt.objects.create(
        message=message, number=1, started_at=started, duration_ms=120, outcome="transient"
    )
    MessageAttempt.objects.create(
        message=message,
        number=3,
        started_at=started,
        duration_ms=80,
        outcome="permanent",
        provider_code="400",
        error="Bad Request: chat not found",
    )

    body = ok_body(client_for(acme["member"]).get(f"{MESSAGES}{message.pk}/"), 200)

    assert body["id"] == message.pk and body["status"] == "failed"
    assert [a["number"] for a in body["attempt_log"]] == [1, 3]
    assert body["attempt_log"][1]["error"] == "Bad Request: chat not found"
    assert body["attempt_log"][1]["provider_code"] == "400"
    assert body["interrupted_attempts"] == 1


def test_detail_does_not_count_the_attempt_in_flight_as_interrupted(acme, client_for):
    message = make_message(
        acme["admin"], status=MessageStatus.SENDING, attempts=2, send_started_at=timezone.now()
    )
    MessageAttempt.objects.create(
        message=message, number=1, started_at=timezone.now(), outcome="transient"
    )

    body = ok_body(client_for(acme["admin"]).get(f"{MESSAGES}{message.pk}/"), 200)

    assert body["interrupted_attempts"] == 0


def test_detail_of_a_fresh_message_has_an_empty_attempt_log(acme, client_for):
    message = make_message(acme["admin"])

    body = ok_body(client_for(acme["admin"]).get(f"{MESSAGES}{message.pk}/"), 200)

    assert body["attempt_log"] == [] and body["interrupted_attempts"] == 0


def test_detail_of_another_orgs_message_is_not_found(acme, client_for):
    connect(acme["outsider"], "telegram")
    theirs = make_message(acme["outsider"])

    assert_error_envelope(client_for(acme["admin"]).get(f"{MESSAGES}{theirs.pk}/"), 404)


def test_detail_of_an_id_that_does_not_exist_is_not_found(acme, client_for):
    assert_error_envelope(client_for(acme["admin"]).get(f"{MESSAGES}2147483647/"), 404)


# --- retry -----------------------------------------------------------------------------------


def test_admin_retries_a_failed_message(acme, client_for):
    message = make_message(
        acme["admin"],
        status=MessageStatus.FAILED,
        attempts=5,
        retries=4,
        last_error="Service Unavailable",
        error_kind="transient",
        error_code="503",
        failed_at=timezone.now(),
    )

    body = ok_body(client_for(acme["admin"]).post(f"{MESSAGES}{message.pk}/retry/"), 202)

    assert body["message_id"] == message.pk
    assert body["data"]["status"] == "queued"
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    assert message.retries == 0
    assert message.failed_at is None
    assert message.last_error == "" and message.error_kind == "" and message.error_code == ""


@pytest.mark.parametrize(
    "status", [MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.SENT]
)
def test_retrying_a_message_that_has_not_failed_is_a_conflict(acme, client_for, status):
    message = make_message(acme["admin"], status=status)

    assert_error_envelope(client_for(acme["admin"]).post(f"{MESSAGES}{message.pk}/retry/"), 409)
    message.refresh_from_db()
    assert message.status == status


def test_retrying_when_the_provider_was_disconnected_is_a_conflict(acme, client_for):
    message = make_message(acme["admin"], status=MessageStatus.FAILED)
    integration_disconnect(organization=acme["admin"].org, provider="telegram")

    assert_error_envelope(client_for(acme["admin"]).post(f"{MESSAGES}{message.pk}/retry/"), 409)
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED


def test_member_cannot_retry(acme, client_for):
    message = make_message(acme["admin"], status=MessageStatus.FAILED)

    assert_error_envelope(client_for(acme["member"]).post(f"{MESSAGES}{message.pk}/retry/"), 403)
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED


def test_retrying_another_orgs_message_is_not_found(acme, client_for):
    connect(acme["outsider"], "telegram")
    theirs = make_message(acme["outsider"], status=MessageStatus.FAILED)

    assert_error_envelope(client_for(acme["admin"]).post(f"{MESSAGES}{theirs.pk}/retry/"), 404)
    theirs.refresh_from_db()
    assert theirs.status == MessageStatus.FAILED


def test_replaying_a_key_after_the_provider_was_disconnected_returns_the_message(acme, client_for):
    client = client_for(acme["admin"])
    first = client.post(
        "/api/messages/", {**VALID["telegram"], "idempotency_key": "k-1"}, format="json"
    )
    client.delete("/api/integrations/telegram/")

    again = client.post(
        "/api/messages/", {**VALID["telegram"], "idempotency_key": "k-1"}, format="json"
    )

    assert again.status_code == 200
    assert again.json()["message_id"] == first.json()["message_id"]


@pytest.mark.parametrize("query", ["status=bogus", "provider=fax"])
def test_unknown_filter_values_are_400_naming_the_parameter(acme, client_for, query):
    response = client_for(acme["member"]).get(f"/api/messages/?{query}")

    body = assert_error_envelope(response, 400)
    assert query.split("=")[0] in body["errors"]


# === bookings: PUT/DELETE/GET /api/calendar/bookings/{id}/ ====================================

BASE32HEX = re.compile(r"^[a-v0-9]+$")


def booking_url(booking_id):
    return f"/api/calendar/bookings/{booking_id}/"


@pytest.fixture
def calendar(cast):
    """The cast with Google Calendar connected for acme."""
    connect(cast["admin"], "google_calendar")
    return cast


def put(client, booking_id, payload=None):
    return client.put(
        booking_url(booking_id), BOOKING if payload is None else payload, format="json"
    )


# --- upsert ----------------------------------------------------------------------------------


def test_put_queues_a_booking_with_a_deterministic_event_id(calendar, client_for):
    body = ok_body(put(client_for(calendar["admin"]), "bk-1001"), 202)

    assert body["status"] == "pending"
    assert body["booking_id"] == "bk-1001"
    assert body["version"] == 1 and body["synced_version"] == 0
    assert body["cancelled"] is False
    assert body["attendees"] == BOOKING["attendees"]
    assert body["event_id"] == booking_event_id(calendar["admin"].org.pk, "bk-1001")
    assert BASE32HEX.match(body["event_id"])
    assert 5 <= len(body["event_id"]) <= 1024


def test_member_may_put_a_booking(calendar, client_for):
    assert ok_body(put(client_for(calendar["member"]), "bk-1"), 202)["status"] == "pending"


def test_put_again_bumps_the_version_and_keeps_one_row_and_the_event_id(calendar, client_for):
    client = client_for(calendar["admin"])
    first = ok_body(put(client, "bk-7"), 202)

    second = ok_body(put(client, "bk-7", {**BOOKING, "summary": "Dinner for six"}), 202)

    assert second["version"] == 2
    assert second["summary"] == "Dinner for six"
    assert second["event_id"] == first["event_id"]
    assert Booking.objects.filter(booking_id="bk-7").count() == 1


def test_same_booking_id_in_another_org_gets_a_different_event_id(calendar, client_for):
    connect(calendar["outsider"], "google_calendar")

    ours = ok_body(put(client_for(calendar["admin"]), "bk-shared"), 202)
    theirs = ok_body(put(client_for(calendar["outsider"]), "bk-shared"), 202)

    assert ours["event_id"] != theirs["event_id"]
    assert BASE32HEX.match(theirs["event_id"])
    assert Booking.objects.filter(booking_id="bk-shared").count() == 2


def test_naive_times_are_read_in_the_booking_timezone(calendar, client_for):
    payload = {**BOOKING, "start": "2030-07-01T20:00:00", "end": "2030-07-01T21:00:00"}

    ok_body(put(client_for(calendar["admin"]), "bk-naive", payload), 202)

    booking = Booking.objects.get(booking_id="bk-naive")
    assert booking.start.utcoffset().total_seconds() == 0
    assert booking.start.hour == 18  # 20:00 in Madrid summer time (UTC+2)


def test_put_after_cancel_restores_the_booking(calendar, client_for):
    client = client_for(calendar["admin"])
    put(client, "bk-back")
    client.delete(booking_url("bk-back"))

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
def test_invalid_booking_is_rejected_naming_the_field(calendar, client_for, field, payload):
    body = assert_error_envelope(put(client_for(calendar["admin"]), "bk-bad", payload), 400)

    assert field in body["errors"], body
    assert not Booking.objects.exists()


@pytest.mark.parametrize("booking_id", ["bad$id", "a%20b", "x" * 129])
def test_invalid_booking_id_is_rejected_naming_booking_id(calendar, client_for, booking_id):
    body = assert_error_envelope(put(client_for(calendar["admin"]), booking_id), 400)

    assert "booking_id" in body["errors"]
    assert not Booking.objects.exists()


def test_booking_id_of_128_allowed_characters_is_accepted(calendar, client_for):
    booking_id = ("Ab0._:-" * 19)[:128]

    assert ok_body(put(client_for(calendar["admin"]), booking_id), 202)["booking_id"] == booking_id


def test_booking_id_with_a_trailing_newline_is_rejected(calendar, client_for):
    response = put(client_for(calendar["admin"]), "bk-1%0A")

    assert_error_envelope(response, 400)
    assert not Booking.objects.exists()


def test_impossible_calendar_date_is_rejected_naming_start(calendar, client_for):
    payload = {**BOOKING, "start": "2030-13-01T20:00:00+01:00"}

    body = assert_error_envelope(put(client_for(calendar["admin"]), "bk-month", payload), 400)

    assert "start" in body["errors"]


def test_summary_with_a_nul_character_is_rejected_naming_summary(calendar, client_for):
    payload = {**BOOKING, "summary": "Dinner\x00for four"}

    body = assert_error_envelope(put(client_for(calendar["admin"]), "bk-nul", payload), 400)

    assert "summary" in body["errors"]


def test_calendar_not_connected_is_a_conflict(cast, client_for):
    body = assert_error_envelope(put(client_for(cast["admin"]), "bk-1"), 409)

    assert "google_calendar" in body["message"]
    assert not Booking.objects.exists()


def test_calendar_disconnected_is_a_conflict(calendar, client_for):
    integration_disconnect(organization=calendar["admin"].org, provider="google_calendar")

    assert_error_envelope(put(client_for(calendar["admin"]), "bk-1"), 409)
    assert not Booking.objects.exists()


# --- cancel ----------------------------------------------------------------------------------


def test_delete_cancels_and_queues_the_deletion(calendar, client_for):
    client = client_for(calendar["admin"])
    created = ok_body(put(client, "bk-9"), 202)

    body = ok_body(client.delete(booking_url("bk-9")), 202)

    assert body["cancelled"] is True
    assert body["status"] == "pending"
    assert body["version"] == 2
    assert body["event_id"] == created["event_id"]
    assert Booking.objects.get(booking_id="bk-9").cancelled is True


def test_delete_of_an_unknown_booking_is_not_found(calendar, client_for):
    assert_error_envelope(client_for(calendar["admin"]).delete(booking_url("bk-missing")), 404)


def test_delete_after_the_calendar_was_disconnected_is_a_conflict(calendar, client_for):
    client = client_for(calendar["admin"])
    put(client, "bk-9")
    integration_disconnect(organization=calendar["admin"].org, provider="google_calendar")

    assert_error_envelope(client.delete(booking_url("bk-9")), 409)
    assert Booking.objects.get(booking_id="bk-9").cancelled is False


# --- read ------------------------------------------------------------------------------------


def test_get_returns_the_booking_with_its_status(calendar, client_for):
    put(client_for(calendar["admin"]), "bk-3")

    body = ok_body(client_for(calendar["member"]).get(booking_url("bk-3")), 200)

    assert body["booking_id"] == "bk-3"
    assert body["status"] == "pending"
    assert body["summary"] == BOOKING["summary"]


def test_get_of_an_unknown_booking_is_not_found(calendar, client_for):
    assert_error_envelope(client_for(calendar["admin"]).get(booking_url("bk-missing")), 404)


# --- other orgs and anonymous callers ----------------------------------------------------------


def test_another_orgs_booking_is_not_found(calendar, client_for):
    put(client_for(calendar["admin"]), "bk-ours")
    outsider = client_for(calendar["outsider"])

    assert_error_envelope(outsider.get(booking_url("bk-ours")), 404)
    assert_error_envelope(outsider.delete(booking_url("bk-ours")), 404)
    assert Booking.objects.get(booking_id="bk-ours").cancelled is False


def test_outsider_cannot_use_another_orgs_header(calendar, client_for):
    put(client_for(calendar["admin"]), "bk-ours")
    client = client_for(calendar["outsider"], org_id=calendar["admin"].org.pk)

    assert_error_envelope(client.get(booking_url("bk-ours")), 404)
    assert_error_envelope(put(client, "bk-ours", {**BOOKING, "summary": "hijacked"}), 404)
    assert Booking.objects.get(booking_id="bk-ours").summary == BOOKING["summary"]


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_anonymous_caller_is_unauthorized(calendar, client_for, method):
    put(client_for(calendar["admin"]), "bk-anon")
    client = client_for(None, org_id=calendar["admin"].org.pk)

    response = getattr(client, method)(booking_url("bk-anon"), BOOKING, format="json")

    assert_error_envelope(response, 401)
    assert Booking.objects.get(booking_id="bk-anon").version == 1
