"""api.messages: scheduled sends (`send_at`) and POST /api/messages/{id}/cancel/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.models import Message, MessageStatus
from tests.factories import assert_error_envelope, connect, ok_body

pytestmark = pytest.mark.django_db

MESSAGES = "/api/messages/"
BULK = "/api/messages/bulk/"
TELEGRAM = {"provider": "telegram", "to": "123456789", "body": "Your table is ready."}


@pytest.fixture
def acme(cast):
    connect(cast["admin"], "telegram")
    connect(cast["outsider"], "telegram")
    return cast


def ahead(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def cancel(client, pk):
    return client.post(f"/api/messages/{pk}/cancel/")


@pytest.mark.parametrize(
    ("send_at", "text"),
    [
        ("2030-01-01T09:00:00", "offset"),  # naive
        ("tomorrow", "ISO 8601"),
        ("0001-01-01T00:00:00+01:00", "ISO 8601"),
    ],
)
def test_a_send_at_without_an_offset_or_unreadable_is_refused(acme, client_for, send_at, text):
    response = client_for(acme["admin"]).post(
        MESSAGES, {**TELEGRAM, "send_at": send_at}, format="json"
    )

    body = assert_error_envelope(response, 400)
    assert body["code"] == "validation_failed"
    assert list(body["errors"]) == ["send_at"] and text in body["errors"]["send_at"][0]
    assert not Message.objects.exists()


def test_send_at_beyond_the_past_tolerance_or_the_horizon_is_refused(acme, client_for, settings):
    settings.SCHEDULE_MAX_AHEAD_SECONDS = 3600
    api = client_for(acme["admin"])

    past = assert_error_envelope(post_at(api, ahead(-120)), 400)
    late = assert_error_envelope(post_at(api, ahead(3700)), 400)

    assert past["errors"] == {"send_at": ["Must not be in the past."]}
    assert list(late["errors"]) == ["send_at"] and "ahead" in late["errors"]["send_at"][0]
    assert not Message.objects.exists()


def post_at(api, send_at):
    return api.post(MESSAGES, {**TELEGRAM, "send_at": send_at}, format="json")


def test_bulk_names_the_bad_send_at_by_index(acme, client_for):
    items = [dict(TELEGRAM), {**TELEGRAM, "send_at": "2030-01-01T09:00:00"}]

    body = assert_error_envelope(
        client_for(acme["admin"]).post(BULK, {"messages": items}, format="json"), 400
    )

    assert list(body["errors"]) == ["messages.1.send_at"]
    assert not Message.objects.exists()


def test_a_future_send_at_is_scheduled_and_a_just_past_one_is_queued(acme, client_for):
    api = client_for(acme["member"])

    later = ok_body(post_at(api, ahead(3600)), 202)
    now = ok_body(post_at(api, ahead(-30)), 202)
    fixed = ok_body(post_at(api, ahead(600)), 202)

    assert later["message"] == "Message scheduled." and later["data"]["status"] == "scheduled"
    assert later["data"]["next_attempt_at"] == later["data"]["send_at"]
    assert now["data"]["status"] == "queued"
    assert fixed["data"]["status"] == "scheduled"


def test_bulk_schedules_items_by_their_own_send_at(acme, client_for):
    items = [dict(TELEGRAM), {**TELEGRAM, "send_at": ahead(3600)}]

    body = ok_body(client_for(acme["admin"]).post(BULK, {"messages": items}, format="json"), 202)

    assert [m["status"] for m in body["messages"]] == ["queued", "scheduled"]


def test_cancel_a_scheduled_or_queued_message(acme, client_for):
    api = client_for(acme["member"])  # members cancel, as they send
    scheduled = ok_body(post_at(api, ahead(3600)), 202)["message_id"]
    queued = ok_body(api.post(MESSAGES, TELEGRAM, format="json"), 202)["message_id"]

    for pk in (scheduled, queued):
        body = ok_body(cancel(api, pk), 200)
        assert body["message"] == "Message cancelled." and body["data"]["status"] == "cancelled"
        row = Message.objects.get(pk=pk)
        assert row.status == MessageStatus.CANCELLED and row.enqueued_at is None


@pytest.mark.parametrize("state", ["sending", "sent", "failed", "cancelled"])
def test_a_started_or_final_message_is_not_cancellable(acme, client_for, state):
    api = client_for(acme["admin"])
    pk = ok_body(api.post(MESSAGES, TELEGRAM, format="json"), 202)["message_id"]
    Message.objects.filter(pk=pk).update(status=state)

    body = assert_error_envelope(cancel(api, pk), 409)

    assert body["code"] == "message_not_cancellable" and state in body["message"]
    assert Message.objects.get(pk=pk).status == state


def test_cancel_of_another_orgs_message_is_404_and_changes_nothing(acme, client_for):
    pk = ok_body(post_at(client_for(acme["admin"]), ahead(3600)), 202)["message_id"]

    body = assert_error_envelope(cancel(client_for(acme["outsider"]), pk), 404)

    assert body["code"] == "not_found"
    assert Message.objects.get(pk=pk).status == MessageStatus.SCHEDULED


def test_the_schema_documents_send_at_and_the_cancel_endpoint(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    send_at = schema["components"]["schemas"]["MessageCreateRequest"]["properties"]["send_at"]
    operation = schema["paths"]["/api/messages/{message_id}/cancel/"]["post"]

    assert send_at["format"] == "date-time" and send_at["example"].endswith("+01:00")
    assert "offset" in send_at["description"]
    assert {"200", "400", "401", "403", "404", "409"} <= set(operation["responses"])
    assert "message_not_cancellable" in operation["responses"]["409"]["description"]
    statuses = schema["components"]["schemas"]["MessageStatusEnum"]["enum"]
    assert {"scheduled", "cancelled"} <= set(statuses)


def test_replaying_a_request_after_its_send_at_passed_returns_the_original(
    acme, client_for, settings
):
    settings.SCHEDULE_PAST_TOLERANCE_SECONDS = 5
    api = client_for(acme["admin"])
    send_at = ahead(-3)  # within the tolerance: means now
    keyed = {**TELEGRAM, "send_at": send_at, "idempotency_key": "reminder-1"}
    first = ok_body(api.post(MESSAGES, keyed, format="json"), 202)
    settings.SCHEDULE_PAST_TOLERANCE_SECONDS = 0  # the send_at is now "too far in the past"

    again = ok_body(api.post(MESSAGES, keyed, format="json"), 200)
    new_key = assert_error_envelope(
        api.post(MESSAGES, {**keyed, "idempotency_key": "reminder-2"}, format="json"), 400
    )
    in_bulk = assert_error_envelope(
        api.post(BULK, {"messages": [keyed, {**keyed, "idempotency_key": "r-3"}]}, format="json"),
        400,
    )

    assert again["message_id"] == first["message_id"]
    assert new_key["errors"] == {"send_at": ["Must not be in the past."]}
    assert in_bulk["errors"] == {"messages.1.send_at": ["Must not be in the past."]}
    assert Message.objects.count() == 1
