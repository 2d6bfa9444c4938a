"""Small API traps: a missing trailing slash, the Bearer scheme, form bodies and HEAD."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from shared.models import Booking, Message
from shared.services.bookings import booking_event_id
from tests.factories import api_client, connect

pytestmark = pytest.mark.django_db

TELEGRAM = {"provider": "telegram", "to": "4242", "body": "Your table is ready."}


@pytest.fixture
def admin(cast):
    """acme's admin (telegram connected) through a client that answers 500 instead of raising."""
    connect(cast["admin"], "telegram")
    return api_client(cast["admin"], raise_request_exception=False)


def error(response, status):
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "error" and body["ok"] is False and body["message"]
    return body


# --- a missing trailing slash ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_a_write_without_the_trailing_slash_is_a_json_404_naming_the_right_url(
    admin, settings, method, debug
):
    settings.DEBUG = debug

    response = getattr(admin, method)("/api/messages?x=1", TELEGRAM, format="json")

    body = error(response, 404)
    assert "/api/messages/" in body["message"]
    assert "Location" not in response
    assert not Message.objects.exists()


def test_a_get_without_the_trailing_slash_is_still_redirected(admin):
    response = admin.get("/api/messages?status=queued")

    assert response.status_code == 301
    assert response["Location"] == "/api/messages/?status=queued"


def test_a_url_that_is_wrong_with_or_without_the_slash_stays_a_plain_404(admin):
    body = error(admin.post("/api/nothing-here", {}, format="json"), 404)

    assert body["message"] == "No endpoint at /api/nothing-here."


# --- the Bearer scheme -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "Basic", "JWT"])
def test_another_auth_scheme_gets_a_401_hint_naming_token(cast, scheme):
    client = APIClient(raise_request_exception=False)
    client.credentials(
        HTTP_AUTHORIZATION=f"{scheme} {cast['admin'].token}",
        HTTP_X_ORG_ID=str(cast["admin"].org.pk),
    )

    body = error(client.get("/api/integrations/"), 401)

    assert "Authorization: Token <key>" in body["message"]
    assert cast["admin"].token not in body["message"]


def test_no_authorization_header_keeps_the_plain_401(cast):
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_X_ORG_ID=str(cast["admin"].org.pk))

    body = error(client.get("/api/integrations/"), 401)

    assert body["message"] == "Authentication credentials were not provided."


# --- a form-encoded body ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_a_form_body_is_415_naming_application_json(admin, content_type):
    response = admin.post("/api/messages/", data="provider=telegram", content_type=content_type)

    body = error(response, 415)
    assert "application/json" in body["message"]


# --- HEAD ------------------------------------------------------------------------------------


@pytest.fixture
def get_paths(admin, cast):
    org = cast["admin"].org
    message = Message.objects.create(
        organization=org,
        integration=org.integrations.get(),
        provider="telegram",
        to="4242",
        body="hello",
        next_attempt_at=timezone.now() + timedelta(days=1),
    )
    start = timezone.now() + timedelta(days=3)
    Booking.objects.create(
        organization=org,
        booking_id="b-1",
        event_id=booking_event_id(org.pk, "b-1"),
        summary="Dinner",
        start=start,
        end=start + timedelta(hours=2),
        next_attempt_at=start,
    )
    return [
        "/health/",
        "/metrics",
        "/api/schema/",
        "/api/docs/",
        "/api/integrations/",
        "/api/integrations/telegram/",
        "/api/audit/",
        "/api/messages/",
        f"/api/messages/{message.pk}/",
        "/api/calendar/bookings/b-1/",
    ]


def test_head_answers_like_get_without_a_body_on_every_get_endpoint(admin, get_paths):
    for path in get_paths:
        got = admin.get(path)
        head = admin.head(path)

        assert got.status_code in (200, 503), (path, got.status_code)
        assert head.status_code == got.status_code, (path, head.content)
        assert head["Content-Type"] == got["Content-Type"], path
        assert head.content == b"", path
