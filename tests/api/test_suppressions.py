"""/api/suppressions/: members list, admins add (validated like a message's `to`) and remove;
messages may ignore the list only when transactional."""

from __future__ import annotations

import pytest

from shared.models import AuditEvent, Message, Suppression
from tests.factories import connect

pytestmark = pytest.mark.django_db

URL = "/api/suppressions/"


@pytest.fixture
def admin(cast, client_for):
    return client_for(cast["admin"])


@pytest.fixture
def member(cast, client_for):
    return client_for(cast["member"])


def test_an_admin_adds_a_normalized_recipient_once(admin, cast):
    body = {"provider": "whatsapp", "recipient": "whatsapp:+1 415 555 0123", "reason": "opt_out"}

    first = admin.post(URL, body, format="json")
    again = admin.post(URL, {**body, "reason": "manual"}, format="json")

    assert first.status_code == 201, first.content
    entry = first.json()["suppression"]
    assert (entry["recipient"], entry["reason"], entry["source"]) == (
        "+14155550123",
        "opt_out",
        "api",
    )
    assert again.status_code == 200 and again.json()["suppression"]["id"] == entry["id"]
    assert again.json()["suppression"]["reason"] == "opt_out"
    assert Suppression.objects.filter(organization=cast["admin"].org).count() == 1
    assert AuditEvent.objects.filter(action="suppression.created").count() == 1


def test_the_reason_defaults_to_manual(admin):
    response = admin.post(URL, {"provider": "sendgrid", "recipient": "a@b.test"}, format="json")
    assert response.status_code == 201 and response.json()["suppression"]["reason"] == "manual"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "telegram", "recipient": "not a chat"}, "recipient"),
        ({"provider": "sendgrid", "recipient": "nobody"}, "recipient"),
        ({"provider": "google_calendar", "recipient": "a@b.test"}, "provider"),
        ({"provider": "telegram", "recipient": 4242}, "recipient"),
        ({"provider": "telegram", "recipient": "4242", "reason": "because"}, "reason"),
        ({"recipient": "4242"}, "provider"),
    ],
)
def test_invalid_entries_are_refused_by_field(admin, body, field):
    response = admin.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_failed"
    assert field in response.json()["errors"]
    assert not Suppression.objects.exists()


def test_members_list_and_filter_by_provider_paginated(admin, member):
    admin.post(URL, {"provider": "telegram", "recipient": "4242"}, format="json")
    admin.post(URL, {"provider": "sendgrid", "recipient": "a@b.test"}, format="json")

    everything = member.get(URL).json()
    telegram = member.get(URL, {"provider": "telegram"}).json()
    bad = member.get(URL, {"provider": "fax"})

    assert everything["count"] == 2 and len(everything["results"]) == 2
    assert [r["recipient"] for r in telegram["results"]] == ["4242"]
    assert bad.status_code == 400 and bad.json()["errors"] == {
        "provider": [bad.json()["errors"]["provider"][0]]
    }


def test_members_cannot_write(admin, member):
    created = admin.post(URL, {"provider": "telegram", "recipient": "4242"}, format="json")
    entry = created.json()["suppression"]["id"]

    post = member.post(URL, {"provider": "telegram", "recipient": "4243"}, format="json")
    delete = member.delete(f"{URL}{entry}/")

    assert post.status_code == delete.status_code == 403
    assert post.json()["code"] == "admin_required"
    assert Suppression.objects.count() == 1


def test_an_admin_removes_an_entry_then_gets_404(admin):
    created = admin.post(URL, {"provider": "telegram", "recipient": "4242"}, format="json")
    path = f"{URL}{created.json()['suppression']['id']}/"

    assert admin.delete(path).status_code == 200
    gone = admin.delete(path)
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(
    ("flags", "status"),
    [
        ({"ignore_suppression": True}, 400),
        ({"ignore_suppression": True, "transactional": False}, 400),
        ({"ignore_suppression": "true", "transactional": True}, 400),  # JSON booleans only
        ({"ignore_suppression": True, "transactional": True}, 202),
        ({"transactional": True}, 202),
    ],
)
def test_ignore_suppression_needs_transactional(cast, admin, flags, status):
    connect(cast["admin"], "telegram")
    body = {"provider": "telegram", "to": "4242", "body": "hi", **flags}

    response = admin.post("/api/messages/", body, format="json")

    assert response.status_code == status, response.content
    if status == 400:
        assert "ignore_suppression" in response.json()["errors"]
    else:
        message = Message.objects.get()
        assert message.transactional is True
        assert message.ignore_suppression is flags.get("ignore_suppression", False)
