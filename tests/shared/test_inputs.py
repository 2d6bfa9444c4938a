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
        "subject": ["An email needs a subject (or a template)."],
        "body": ["An email needs a body or html (or a template)."],
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


# Templates, media, attachments, parse_mode and tag: what each provider's spec allows.
SID = "HX" + "0123456789abcdef" * 2
WA_TEMPLATE = {
    "provider": "whatsapp",
    "to": "+14155550100",
    "template": {"content_sid": SID, "variables": {"1": "Ana", "2": "10:30"}},
}
SG_TEMPLATE = {
    "provider": "sendgrid",
    "to": "ana@example.test",
    "template": {"id": "d-" + "ab" * 16, "data": {"name": "Ana", "items": [1, 2]}},
}
PDF = {"filename": "receipt.pdf", "content": "JVBERi0xLjQK"}  # "%PDF-1.4\n"


def test_a_whatsapp_template_needs_no_body_and_is_kept_normalised():
    row = validated(MessageCreateSerializer, WA_TEMPLATE)

    assert row["template"] == WA_TEMPLATE["template"]
    assert row["body"] == ""


def test_a_sendgrid_template_stands_in_for_subject_and_content():
    row = validated(MessageCreateSerializer, {**SG_TEMPLATE, "template": {"id": "d-" + "AB" * 16}})

    assert row["template"] == {"id": "d-" + "ab" * 16, "data": {}}
    assert (row["subject"], row["body"], row["html"]) == ("", "", "")
    assert validated(MessageCreateSerializer, {**SG_TEMPLATE, "subject": "Hi"})["subject"] == "Hi"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**WA_TEMPLATE, "template": {"content_sid": "HX123"}}, "template.content_sid"),
        ({**WA_TEMPLATE, "template": {"content_sid": "MG" + SID[2:]}}, "template.content_sid"),
        ({**WA_TEMPLATE, "template": {"content_sid": SID, "variables": [1]}}, "template.variables"),
        (
            {**WA_TEMPLATE, "template": {"content_sid": SID, "variables": {"1": ""}}},
            "template.variables.1",
        ),
        (
            {**WA_TEMPLATE, "template": {"content_sid": SID, "variables": {"1": 5}}},
            "template.variables.1",
        ),
        (
            {**WA_TEMPLATE, "template": {"content_sid": SID, "variables": {"1": "a\tb"}}},
            "template.variables.1",
        ),
        (
            {**WA_TEMPLATE, "template": {"content_sid": SID, "variables": {"1": "a     b"}}},
            "template.variables.1",
        ),
        (
            {**WA_TEMPLATE, "template": {"content_sid": SID, "variables": {"x.y": "a"}}},
            "template.variables",
        ),
        ({**WA_TEMPLATE, "template": {"content_sid": SID, "sid": 1}}, "template.sid"),
        ({**WA_TEMPLATE, "template": "HX"}, "template"),
        ({**WA_TEMPLATE, "body": "free text too"}, "body"),
        ({**WA_TEMPLATE, "media_urls": ["https://cdn.example.com/a.jpg"]}, "media_urls"),
        ({**SG_TEMPLATE, "template": {"id": "x"}}, "template.id"),
        ({**SG_TEMPLATE, "template": {"id": "d-" + "ab" * 16, "data": "x"}}, "template.data"),
        ({**SG_TEMPLATE, "body": "text too"}, "body"),
        ({**TELEGRAM, "template": {"id": "d-" + "ab" * 16}}, "template"),
        ({**TELEGRAM, "provider": "instagram", "to": "1", "template": {}}, "template"),
    ],
)
def test_a_bad_template_is_refused_at_its_field(data, field):
    errors = errors_of(MessageCreateSerializer, data)

    assert list(errors) == [field]


def test_template_variables_are_bounded_like_twilios():
    many = {str(i): "x" for i in range(101)}
    errors = errors_of(
        MessageCreateSerializer,
        {**WA_TEMPLATE, "template": {"content_sid": SID, "variables": many}},
    )
    assert errors == {"template.variables": ["Must have at most 100 variables."]}


def test_template_data_is_bounded():
    big = {"x": "y" * 70_000}
    errors = errors_of(
        MessageCreateSerializer, {**SG_TEMPLATE, "template": {"id": "d-" + "ab" * 16, "data": big}}
    )
    assert list(errors) == ["template.data"]


@pytest.mark.parametrize("provider", ["whatsapp", "telegram"])
def test_media_may_travel_alone_or_with_a_caption(provider):
    to = "+14155550100" if provider == "whatsapp" else "4242"
    media = {"provider": provider, "to": to, "media_urls": ["https://cdn.example.com/a.jpg"]}

    assert validated(MessageCreateSerializer, media)["media_urls"] == media["media_urls"]
    assert validated(MessageCreateSerializer, {**media, "body": "Your ticket"})["body"]


def test_a_telegram_caption_is_bounded_by_telegrams_caption_limit():
    media = {**TELEGRAM, "media_urls": ["https://cdn.example.com/a.jpg"], "body": "x" * 1025}

    assert errors_of(MessageCreateSerializer, media) == {
        "body": ["Must be at most 1024 characters beside media."]
    }


def test_instagram_media_travels_without_text():
    media = {"provider": "instagram", "to": "17841400000000001"}
    media["media_urls"] = ["https://cdn.example.com/a.jpg"]

    assert validated(MessageCreateSerializer, media)["body"] == ""
    assert list(errors_of(MessageCreateSerializer, {**media, "body": "hi"})) == ["body"]


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.com/a.jpg",
        "ftp://cdn.example.com/a.jpg",
        "https://user:pw@cdn.example.com/a.jpg",
        "https://127.0.0.1/a.jpg",
        "https://10.1.2.3/a.jpg",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/a.jpg",
        "https://localhost/a.jpg",
        "https://cdn.example.com/a b.jpg",
        "https://cdn.example.com/a.jpg#frag",
        "https:///a.jpg",
        "not a url",
        "https://cdn.example.com/" + "a" * 2048,
    ],
)
def test_a_media_url_must_be_public_https(url):
    errors = errors_of(MessageCreateSerializer, {**TELEGRAM, "media_urls": [url]})

    assert list(errors) == ["media_urls.0"]
    assert url[:40] not in errors["media_urls.0"][0]


def test_media_is_bounded_per_provider_and_refused_where_the_provider_takes_none():
    two = ["https://cdn.example.com/a.jpg", "https://cdn.example.com/b.jpg"]

    assert errors_of(MessageCreateSerializer, {**TELEGRAM, "media_urls": two}) == {
        "media_urls": ["telegram takes at most 1 per message."]
    }
    assert errors_of(MessageCreateSerializer, {**EMAIL, "media_urls": two[:1]}) == {
        "media_urls": ["sendgrid messages take no media_urls; send files as attachments."]
    }
    assert list(errors_of(MessageCreateSerializer, {**TELEGRAM, "media_urls": two * 6})) == [
        "media_urls"
    ]


def test_an_attachment_is_described_and_its_type_guessed():
    row = validated(MessageCreateSerializer, {**EMAIL, "attachments": [PDF]})

    assert row["attachments"] == [
        {**PDF, "type": "application/pdf", "disposition": "attachment", "content_id": "", "size": 9}
    ]


@pytest.mark.parametrize(
    ("attachment", "field"),
    [
        ({**PDF, "content": "not base64!"}, "attachments.0.content"),
        ({**PDF, "content": "JVBERi0xLjQ"}, "attachments.0.content"),  # unpadded
        ({**PDF, "content": ""}, "attachments.0.content"),
        ({**PDF, "content": 42}, "attachments.0.content"),
        ({**PDF, "filename": "../etc/passwd"}, "attachments.0.filename"),
        ({**PDF, "filename": "a\nb.pdf"}, "attachments.0.filename"),
        ({**PDF, "filename": ".."}, "attachments.0.filename"),
        ({**PDF, "type": "pdf"}, "attachments.0.type"),
        ({**PDF, "disposition": "inline"}, "attachments.0.content_id"),
        ({**PDF, "disposition": "hidden"}, "attachments.0.disposition"),
        ({"content": PDF["content"]}, "attachments.0.filename"),
    ],
)
def test_a_bad_attachment_is_refused_at_its_field_without_echoing_it(attachment, field):
    errors = errors_of(MessageCreateSerializer, {**EMAIL, "attachments": [attachment]})

    assert list(errors) == [field]
    assert "JVBERi0" not in str(errors)


def test_attachments_are_bounded_in_count_and_size(settings):
    eleven = [PDF] * 11
    assert list(errors_of(MessageCreateSerializer, {**EMAIL, "attachments": eleven})) == [
        "attachments"
    ]
    big = {
        "filename": "big.bin",
        "content": "A" * (settings.MESSAGE_ATTACHMENTS_MAX_BYTES // 3 * 4 + 4),
    }
    assert errors_of(MessageCreateSerializer, {**EMAIL, "attachments": [big]}) == {
        "attachments": [
            f"Must be at most {settings.MESSAGE_ATTACHMENTS_MAX_BYTES} bytes in all (decoded)."
        ]
    }


def test_only_email_takes_attachments():
    assert errors_of(MessageCreateSerializer, {**TELEGRAM, "attachments": [PDF]}) == {
        "attachments": ["telegram messages take no attachments; send media by URL with media_urls."]
    }


def test_parse_mode_is_telegrams_and_tag_is_instagrams():
    assert (
        validated(MessageCreateSerializer, {**TELEGRAM, "parse_mode": "HTML"})["parse_mode"]
        == "HTML"
    )
    instagram = {"provider": "instagram", "to": "1", "body": "hi", "tag": "HUMAN_AGENT"}
    assert validated(MessageCreateSerializer, instagram)["tag"] == "HUMAN_AGENT"

    assert list(errors_of(MessageCreateSerializer, {**TELEGRAM, "parse_mode": "Markdown"})) == [
        "parse_mode"
    ]
    assert errors_of(MessageCreateSerializer, {**EMAIL, "parse_mode": "HTML"}) == {
        "parse_mode": ["sendgrid messages take no parse_mode."]
    }
    assert errors_of(MessageCreateSerializer, {**TELEGRAM, "tag": "HUMAN_AGENT"}) == {
        "tag": ["telegram messages take no tag."]
    }
    assert list(errors_of(MessageCreateSerializer, {**instagram, "tag": "ACCOUNT_UPDATE"})) == [
        "tag"
    ]


def test_bulk_reports_template_errors_by_index():
    bulk = {"messages": [WA_TEMPLATE, {**WA_TEMPLATE, "template": {"content_sid": "HX1"}}]}

    assert list(errors_of(MessageBulkSerializer, bulk)) == ["messages.1.template.content_sid"]


@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b"])
def test_template_text_postgres_cannot_store_is_refused(text):
    wa = {**WA_TEMPLATE, "template": {"content_sid": SID, "variables": {"1": text}}}
    sg = {**SG_TEMPLATE, "template": {"id": "d-" + "ab" * 16, "data": {"a": [{text: 1}]}}}

    assert list(errors_of(MessageCreateSerializer, wa)) == ["template.variables.1"]
    assert list(errors_of(MessageCreateSerializer, sg)) == ["template.data"]


def test_message_fields_are_copies_of_unbound_prototypes_bound_per_serializer():
    first, second = MessageCreateSerializer(data=TELEGRAM), MessageCreateSerializer(data=EMAIL)

    assert list(first.fields) == list(MessageCreateSerializer._declared_fields)
    for name, field in first.fields.items():
        other = second.fields[name]
        assert field is not other and field.parent is first and other.parent is second
        prototype = MessageCreateSerializer._field_prototypes[name]
        assert prototype.parent is None and prototype.field_name is None
    assert first.is_valid() and second.is_valid()
    assert first.validated_data["to"] == "4242" and second.validated_data["to"] == EMAIL["to"]


def test_message_validation_from_many_threads_keeps_each_request_s_errors():
    from concurrent.futures import ThreadPoolExecutor

    attachment = {"filename": "a.txt", "content": "aGk="}
    bodies = [
        TELEGRAM,
        {**TELEGRAM, "to": "chat 42"},
        {**EMAIL, "attachments": [attachment]},
        {**EMAIL, "attachments": [{**attachment, "content": "not base64!"}]},
        {**TELEGRAM, "body": ""},
    ]
    expected = [_outcome(body) for body in bodies]

    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            assert list(pool.map(_outcome, bodies)) == expected
    assert expected[0] is None and expected[2] is None
    assert set(expected[1]) == {"to"} and set(expected[4]) == {"body"}
    assert set(expected[3]) == {"attachments.0.content"}


def _outcome(body: dict) -> dict | None:
    try:
        validated(MessageCreateSerializer, body)
    except ValidationFailed as exc:
        return exc.errors
    return None


def test_template_data_that_is_not_json_is_refused_not_crashed():
    from datetime import date

    for value in (float("nan"), date(2030, 1, 1), {1, 2}):
        data = {**SG_TEMPLATE, "template": {"id": "d-" + "ab" * 16, "data": {"x": value}}}
        assert list(errors_of(MessageCreateSerializer, data)) == ["template.data"]
