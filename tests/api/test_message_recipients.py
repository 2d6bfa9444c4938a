"""POST /api/messages/ and /bulk/: strict recipients (400 naming the field, stored normalized)
and idempotency keys reused for another request (409 idempotency_key_reused)."""

from __future__ import annotations

import pytest

from shared.models import Message
from shared.providers.registry import MESSAGING_SLUGS
from tests.api.test_messages import VALID, post, post_bulk
from tests.factories import assert_error_envelope, connect, ok_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(cast):
    """The cast with every messaging provider connected for acme."""
    connect(cast["admin"], *MESSAGING_SLUGS)
    return cast


# --- idempotency keys ------------------------------------------------------------------------


def test_a_replay_is_compared_after_normalization(acme, client_for):
    client = client_for(acme["admin"])
    key = {"idempotency_key": "norm"}
    first = ok_body(post(client, {**VALID["whatsapp"], **key}), 202)

    again = post(client, {**VALID["whatsapp"], **key, "to": " whatsapp:+1 (415) 555-0123"})

    assert ok_body(again, 200)["message_id"] == first["message_id"]


REUSED = [
    ("body", {"body": "A different body"}),
    ("to", {"to": "987654321"}),
    ("provider", {"provider": "instagram", "to": "17841400000000002"}),
]


@pytest.mark.parametrize(("field", "change"), REUSED, ids=[f for f, _ in REUSED])
def test_same_key_with_another_request_is_409_idempotency_key_reused(
    acme, client_for, field, change
):
    client = client_for(acme["admin"])
    payload = {**VALID["telegram"], "idempotency_key": "order-42-ready"}
    first = ok_body(post(client, payload), 202)

    body = assert_error_envelope(post(client, {**payload, **change}), 409)

    assert body["code"] == "idempotency_key_reused"
    assert list(body["errors"]) == ["idempotency_key"]
    assert field in body["errors"]["idempotency_key"][0]
    assert str(first["message_id"]) in body["message"]
    assert Message.objects.get().body == VALID["telegram"]["body"]


@pytest.mark.parametrize("change", [{"subject": "Another subject"}, {"html": "<p>x</p>"}])
def test_an_email_replay_with_another_subject_or_html_is_409(acme, client_for, change):
    client = client_for(acme["admin"])
    payload = {**VALID["sendgrid"], "idempotency_key": "mail-1"}
    ok_body(post(client, payload), 202)

    body = assert_error_envelope(post(client, {**payload, **change}), 409)

    assert body["code"] == "idempotency_key_reused"
    assert Message.objects.count() == 1


def test_a_row_stored_before_strict_emails_still_matches_its_replay(acme, client_for):
    """Rows written by the older check kept the domain's case; a replay normalizes it."""
    org = acme["admin"].org
    legacy = Message.objects.create(
        organization=org,
        integration=org.integrations.get(provider="sendgrid"),
        provider="sendgrid",
        to="carol@Example.TEST",
        subject=VALID["sendgrid"]["subject"],
        body="hello",
        idempotency_key="legacy",
    )
    payload = {**VALID["sendgrid"], "to": "carol@Example.TEST", "idempotency_key": "legacy"}

    again = post(client_for(acme["admin"]), {**payload, "body": "hello"})

    assert ok_body(again, 200)["message_id"] == legacy.pk
    other = post(client_for(acme["admin"]), {**payload, "body": "hello", "to": "dan@example.test"})
    assert assert_error_envelope(other, 409)["code"] == "idempotency_key_reused"


def test_bulk_with_a_key_reused_for_other_content_is_409_by_index_and_writes_nothing(
    acme, client_for
):
    client = client_for(acme["admin"])
    for key in ("seen", "seen-2", "other"):
        ok_body(post(client, {**VALID["telegram"], "idempotency_key": key}), 202)
    items = [
        {**VALID["sendgrid"], "idempotency_key": "fresh"},
        {**VALID["telegram"], "idempotency_key": "seen"},
        {**VALID["telegram"], "body": "Changed", "idempotency_key": "seen-2"},
        {**VALID["whatsapp"], "idempotency_key": "other"},
    ]

    body = assert_error_envelope(post_bulk(client, items), 409)

    assert body["code"] == "idempotency_key_reused"
    assert set(body["errors"]) == {"messages.2.idempotency_key", "messages.3.idempotency_key"}
    assert body["message"].startswith("messages.2.idempotency_key: ")
    assert "different provider, to;" in body["errors"]["messages.3.idempotency_key"][0]
    assert Message.objects.count() == 3
    assert not Message.objects.filter(idempotency_key="fresh").exists()


# --- strict recipients ---------------------------------------------------------------------

STRICT_DESTINATIONS = [
    ("whatsapp", "+15551234567"),  # +1 555 is no assigned area code
    ("whatsapp", "+4412"),
    ("whatsapp", "+999123456789"),
    ("whatsapp", "+14155550123 ext. 7"),
    ("sendgrid", "carol@localhost"),
    ("sendgrid", "Carol <carol@example.test>"),
    ("sendgrid", "carol@[127.0.0.1]"),
    ("sendgrid", "jos\u00e9@example.test"),
    ("telegram", "@corbi news"),
]


@pytest.mark.parametrize(("provider", "to"), STRICT_DESTINATIONS)
def test_an_impossible_or_invalid_recipient_is_400_naming_to(acme, client_for, provider, to):
    response = post(client_for(acme["admin"]), {**VALID[provider], "to": to})

    body = assert_error_envelope(response, 400)
    assert body["code"] == "validation_failed"
    assert list(body["errors"]) == ["to"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(("provider", "to"), STRICT_DESTINATIONS)
def test_an_invalid_recipient_in_bulk_is_400_by_index(acme, client_for, provider, to):
    items = [VALID["telegram"], {**VALID[provider], "to": to}]

    body = assert_error_envelope(post_bulk(client_for(acme["admin"]), items), 400)

    assert list(body["errors"]) == ["messages.1.to"]
    assert not Message.objects.exists()


NORMALIZED = [
    ("whatsapp", "whatsapp:+1 (415) 555-0123", "+14155550123"),
    ("whatsapp", "+15005550003", "+15005550003"),  # a sandbox magic recipient
    ("sendgrid", " Carol@Example.TEST ", "Carol@example.test"),
    ("sendgrid", "bounce@sandbox.test", "bounce@sandbox.test"),  # a sandbox magic recipient
    ("sendgrid", "ana@m\u00fcnchen.example", "ana@xn--mnchen-3ya.example"),
    ("telegram", "-1001234567890", "-1001234567890"),
    ("telegram", "@corbi_news", "@corbi_news"),
]


@pytest.mark.parametrize(("provider", "to", "stored"), NORMALIZED)
def test_recipients_are_stored_in_their_normalized_form(acme, client_for, provider, to, stored):
    body = ok_body(post(client_for(acme["admin"]), {**VALID[provider], "to": to}), 202)

    assert body["data"]["to"] == stored
    assert Message.objects.get().to == stored
