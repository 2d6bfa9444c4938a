"""Malformed input through the real stack: depth, size, NUL/surrogates, non-ASCII digits, types."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from api.parsers import MAX_JSON_DEPTH, MAX_JSON_VALUES
from shared.models import Booking, Integration, Message
from tests.factories import CANARY, VALID_EXTRA, api_client, assert_no_canary, connect

pytestmark = pytest.mark.django_db

MESSAGES = "/api/messages/"
BULK = "/api/messages/bulk/"
BOOKING_URL = "/api/calendar/bookings/b-1/"
TELEGRAM = {"provider": "telegram", "to": "4242", "body": "Your table is ready."}
BOOKING = {
    "summary": "Dinner",
    "start": "2030-01-01T20:00:00+01:00",
    "end": "2030-01-01T22:00:00+01:00",
}
# Every endpoint that reads a JSON body, with a body it accepts.
JSON_ENDPOINTS = [
    ("post", "/api/integrations/sendgrid/connect/"),
    ("post", "/api/integrations/telegram/test/"),
    ("post", MESSAGES),
    ("post", BULK),
    ("put", BOOKING_URL),
]


@pytest.fixture
def acme(cast):
    """The cast with every provider connected for acme."""
    connect(cast["admin"])
    return cast


@pytest.fixture
def admin(acme):
    """acme's admin through a client that answers 500 instead of raising it."""
    return api_client(acme["admin"], raise_request_exception=False)


def send(client, method, path, raw: str | bytes):
    return getattr(client, method)(path, data=raw, content_type="application/json")


def error(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert_no_canary(response.content.decode())
    body = response.json()
    assert body["status"] == "error" and body["ok"] is False and body["message"]
    return body


# --- item 7: depth and size ------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
def test_a_hundred_thousand_open_brackets_are_400_on_every_json_endpoint(admin, method, path):
    body = error(send(admin, method, path, "[" * 100_000), 400)

    assert f"{MAX_JSON_DEPTH} levels" in body["message"]


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
def test_five_thousand_nested_objects_are_400_naming_the_depth_limit(admin, method, path):
    raw = '{"a":' * 5000 + "1" + "}" * 5000

    body = error(send(admin, method, path, raw), 400)

    assert f"{MAX_JSON_DEPTH} levels" in body["message"]


def test_nesting_at_the_limit_is_parsed_and_one_more_level_is_refused(admin):
    pad = json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))
    at_limit = {"messages": [{**TELEGRAM, "body": "x"}], "pad": pad}

    assert send(admin, "post", BULK, json.dumps(at_limit)).status_code == 202
    too_deep = {**at_limit, "pad": [pad]}
    assert (
        f"{MAX_JSON_DEPTH} levels"
        in error(send(admin, "post", BULK, json.dumps(too_deep)), 400)["message"]
    )


def test_wide_but_shallow_bodies_are_not_mistaken_for_deep_ones(admin):
    items = [{**TELEGRAM, "body": '[[[[{{{{"\\"]]'} for _ in range(1000)]

    response = send(admin, "post", BULK, json.dumps({"messages": items}))

    assert response.status_code == 202, response.content


def test_a_body_over_the_size_limit_is_413_in_the_envelope(admin, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    raw = json.dumps({**TELEGRAM, "body": "x" * 1000})

    body = error(send(admin, "post", MESSAGES, raw), 413)

    assert "1000 bytes" in body["message"]
    assert not Message.objects.exists()


@pytest.mark.parametrize("pad", [0, []], ids=["numbers", "arrays"])
def test_a_body_with_more_than_the_maximum_number_of_values_is_413(admin, pad):
    raw = json.dumps({"messages": [{**TELEGRAM}], "pad": [pad] * MAX_JSON_VALUES})

    body = error(send(admin, "post", BULK, raw), 413)

    assert f"{MAX_JSON_VALUES} values" in body["message"]


def test_a_body_within_the_size_limit_is_accepted(admin, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    raw = json.dumps({**TELEGRAM, "body": "x" * 900})

    assert send(admin, "post", MESSAGES, raw).status_code == 202


def test_invalid_utf8_is_malformed_json(admin):
    body = error(send(admin, "post", MESSAGES, b'{"provider": "\xff"}'), 400)

    assert body["message"] == "Malformed JSON in the request body."


def test_nan_and_infinity_literals_are_malformed_json(admin):
    raw = '{"token": "x", "extra": {"rate_limit_per_second": NaN}}'

    error(send(admin, "post", "/api/integrations/whatsapp/connect/", raw), 400)


# --- item 8: NUL bytes and lone surrogates ---------------------------------------------------

BAD_CHARS = {"nul": "\\u0000", "lone high surrogate": "\\ud800", "lone low surrogate": "\\udfff"}


def raw_with(template: str, bad: str) -> str:
    """A JSON text whose string escapes produce the bad character when parsed."""
    return template.replace("BAD", bad)


CHARACTER_CASES = [
    ("post", "/api/integrations/sendgrid/connect/", '{"token": "SG.abc", "extra": {"from_email": "a@b.test", "from_name": "aBADb"}}', "extra.from_name"),
    ("post", "/api/integrations/telegram/connect/", '{"token": "1234:' + "a" * 30 + '", "extra": {"chat_id": "@chanBADnel"}}', "extra.chat_id"),
    ("post", "/api/integrations/telegram/test/", '{"extra": {"chat_id": "BAD"}}', "extra.chat_id"),
    ("post", MESSAGES, '{"provider": "telegram", "to": "4242", "body": "hiBAD"}', "body"),
    ("post", MESSAGES, '{"provider": "telegram", "to": "4242", "body": "hi", "idempotency_key": "kBAD"}', "idempotency_key"),
    ("post", BULK, '{"messages": [{"provider": "telegram", "to": "4242", "body": "ok"}, {"provider": "telegram", "to": "4242", "body": "hiBAD"}]}', "messages.1.body"),
    ("put", BOOKING_URL, '{"summary": "DinBADner", "start": "2030-01-01T20:00:00Z", "end": "2030-01-01T22:00:00Z"}', "summary"),
    ("put", BOOKING_URL, '{"summary": "Dinner", "description": "BAD", "start": "2030-01-01T20:00:00Z", "end": "2030-01-01T22:00:00Z"}', "description"),
    ("put", BOOKING_URL, '{"summary": "Dinner", "location": "BAD", "start": "2030-01-01T20:00:00Z", "end": "2030-01-01T22:00:00Z"}', "location"),
    ("put", BOOKING_URL, '{"summary": "Dinner", "attendees": ["aBAD@b.test"], "start": "2030-01-01T20:00:00Z", "end": "2030-01-01T22:00:00Z"}', "attendees.0"),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_CHARS.values(), ids=BAD_CHARS.keys())
@pytest.mark.parametrize(
    ("method", "path", "template", "field"), CHARACTER_CASES, ids=lambda v: str(v)[:40]
)
def test_nul_and_lone_surrogates_are_400_naming_the_field_and_write_nothing(
    admin, method, path, template, field, bad
):
    before = (Integration.objects.count(), Message.objects.count(), Booking.objects.count())

    body = error(send(admin, method, path, raw_with(template, bad)), 400)

    assert field in body["errors"], body
    assert body["message"].startswith(f"{field}: ")
    assert (Integration.objects.count(), Message.objects.count(), Booking.objects.count()) == before


@pytest.mark.parametrize("bad", BAD_CHARS.values(), ids=BAD_CHARS.keys())
def test_a_bad_character_in_a_key_is_400_naming_the_key_escaped(admin, bad):
    raw = raw_with('{"token": "SG.abc", "extra": {"from_email": "a@b.test", "kBAD": "v"}}', bad)

    body = error(send(admin, "post", "/api/integrations/sendgrid/connect/", raw), 400)

    assert f"extra.k{bad}" in body["errors"], body


def test_every_offending_string_is_reported_in_document_order(admin):
    raw = '{"messages": [{"to": "\\u0000"}, {"to": "4242", "body": "\\ud800"}]}'

    body = error(send(admin, "post", BULK, raw), 400)

    assert list(body["errors"]) == ["messages.0.to", "messages.1.body"]


def test_a_paired_surrogate_escape_is_a_normal_character(admin):
    raw = '{"provider": "telegram", "to": "4242", "body": "dinner \\ud83c\\udf7d"}'

    response = send(admin, "post", MESSAGES, raw)

    assert response.status_code == 202, response.content
    assert Message.objects.get().body == "dinner \U0001f37d"


# --- item 9: X-Org-ID with non-ASCII digits --------------------------------------------------

ORG_HEADERS = {
    "latin-1 superscripts": b"\xb9\xb2\xb3".decode("latin-1"),  # what WSGI makes of the bytes
    "arabic-indic": "\u0661",
    "full-width": "\uff11",
    "devanagari": "\u0967",
}


@pytest.mark.parametrize("header", ORG_HEADERS.values(), ids=ORG_HEADERS.keys())
def test_org_header_with_non_ascii_digits_is_400_not_500(acme, header):
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {acme['admin'].token}", HTTP_X_ORG_ID=header)

    body = error(client.get("/api/integrations/"), 400)

    assert "X-Org-ID" in body["message"]


def test_org_header_with_ascii_digits_and_spaces_still_works(acme):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {acme['admin'].token}",
        HTTP_X_ORG_ID=f" {acme['admin'].org.pk} ",
    )

    assert client.get("/api/integrations/").status_code == 200


# --- item 10: destinations are ASCII-digit strings, text fields are strings ------------------

NON_ASCII_DESTINATIONS = [
    ("whatsapp", "+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0662\u0663"),
    ("whatsapp", "+1415555\uff10\uff11\uff12\uff13"),
    ("telegram", "\uff14\uff12\uff14\uff12"),
    ("telegram", "-\u0661\u0662\u0663"),
    ("instagram", "\u0967\u0968\u0969\u096a\u096b"),
]


@pytest.mark.parametrize(("provider", "to"), NON_ASCII_DESTINATIONS)
def test_destinations_with_non_ascii_digits_are_400_naming_to(admin, provider, to):
    body = error(admin.post(MESSAGES, {"provider": provider, "to": to, "body": "hi"}, "json"), 400)

    assert "to" in body["errors"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(("provider", "to"), NON_ASCII_DESTINATIONS)
def test_bulk_destinations_with_non_ascii_digits_are_400_by_index(admin, provider, to):
    items = [{"provider": provider, "to": to, "body": "hi"}]

    body = error(admin.post(BULK, {"messages": items}, "json"), 400)

    assert "messages.0.to" in body["errors"]


NON_STRING_FIELDS = [
    ({"to": 4242}, "to"),
    ({"to": 4242.0}, "to"),
    ({"body": 42}, "body"),
    ({"body": 4.2}, "body"),
    ({"idempotency_key": 17}, "idempotency_key"),
    ({"provider": "sendgrid", "to": "a@b.test", "subject": 1, "body": "x"}, "subject"),
    ({"provider": "sendgrid", "to": "a@b.test", "subject": "s", "html": 1}, "html"),
]


@pytest.mark.parametrize(("change", "field"), NON_STRING_FIELDS)
def test_numbers_are_not_coerced_to_strings_in_a_message(admin, change, field):
    body = error(admin.post(MESSAGES, {**TELEGRAM, **change}, "json"), 400)

    assert field in body["errors"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(("change", "field"), NON_STRING_FIELDS)
def test_numbers_are_not_coerced_to_strings_in_a_bulk_item(admin, change, field):
    body = error(admin.post(BULK, {"messages": [{**TELEGRAM, **change}]}, "json"), 400)

    assert f"messages.0.{field}" in body["errors"]


def test_a_numeric_token_is_not_coerced_to_a_string(admin):
    payload = {"token": 12345678, "extra": VALID_EXTRA["whatsapp"]}

    body = error(admin.post("/api/integrations/whatsapp/connect/", payload, "json"), 400)

    assert "token" in body["errors"]


BAD_EXTRA_DIGITS = [
    ("whatsapp", {**VALID_EXTRA["whatsapp"], "from_whatsapp": "+1415523888\u0666"}, "extra.from_whatsapp"),
    ("whatsapp", {**VALID_EXTRA["whatsapp"], "to_whatsapp": "+\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff12\uff13"}, "extra.to_whatsapp"),
    ("telegram", {"chat_id": "\u0664\u0662"}, "extra.chat_id"),
    ("instagram", {"instagram_scoped_id": "1784140000000000\u0661"}, "extra.instagram_scoped_id"),
]  # fmt: skip


@pytest.mark.parametrize(("provider", "extra", "field"), BAD_EXTRA_DIGITS)
def test_extra_ids_and_numbers_with_non_ascii_digits_are_400_naming_the_field(
    admin, provider, extra, field
):
    payload = {"token": CANARY[provider], "extra": extra}

    body = error(admin.post(f"/api/integrations/{provider}/connect/", payload, "json"), 400)

    assert field in body["errors"]


def test_an_integer_telegram_chat_id_in_extra_is_still_accepted(admin):
    payload = {"token": CANARY["telegram"], "extra": {"chat_id": 4242}}

    response = admin.post("/api/integrations/telegram/connect/", payload, "json")

    assert response.status_code == 200, response.content
    assert Integration.objects.get(provider="telegram").extra["chat_id"] == "4242"


# --- item 2: rate_limit_per_second is bounded to what the limiter can represent --------------

RATES_REFUSED = ["1e-300", "0.0009", "0", "-1", "10000.5", "1e400", "true", '"5"']
RATES_ACCEPTED = ["0.001", "1", "2.5", "10000"]


@pytest.mark.parametrize("rate", RATES_REFUSED)
def test_rate_limit_outside_0_001_to_10000_is_400_naming_the_field(admin, rate):
    raw = '{"token": "SG.abc", "extra": {"from_email": "a@b.test", "rate_limit_per_second": RATE}}'

    body = error(send(admin, "post", "/api/integrations/sendgrid/connect/", raw.replace("RATE", rate)), 400)  # fmt: skip

    assert "extra.rate_limit_per_second" in body["errors"]
    assert "0.001" in body["errors"]["extra.rate_limit_per_second"][0]


@pytest.mark.parametrize("rate", RATES_ACCEPTED)
def test_rate_limit_from_0_001_to_10000_is_accepted(admin, rate):
    raw = '{"token": "SG.abc", "extra": {"from_email": "a@b.test", "rate_limit_per_second": RATE}}'

    response = send(admin, "post", "/api/integrations/sendgrid/connect/", raw.replace("RATE", rate))

    assert response.status_code == 200, response.content
    stored = Integration.objects.get(provider="sendgrid").extra["rate_limit_per_second"]
    assert stored == float(rate)
