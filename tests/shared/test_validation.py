"""shared.validation: destinations, extra fields and token shapes, each refusal naming its field."""

from __future__ import annotations

import json

import pytest

from shared.errors import ValidationFailed
from shared.validation import validate_destination, validate_extra, validate_token
from tests.factories import BAD_DESTINATIONS, VALID_EXTRA

DESTINATIONS = [
    ("whatsapp", " +14155550123 ", "+14155550123"),
    ("whatsapp", "whatsapp:+14155550123", "+14155550123"),
    ("sendgrid", " carol@example.test ", "carol@example.test"),
    ("telegram", "-1001234567890", "-1001234567890"),
    ("telegram", "@corbi_news", "@corbi_news"),
    ("instagram", "17841400000000002", "17841400000000002"),
]


@pytest.mark.parametrize(("provider", "to", "expected"), DESTINATIONS)
def test_destinations_are_normalised(provider, to, expected):
    assert validate_destination(provider, to) == expected


# A number is refused too: ids travel as strings.
@pytest.mark.parametrize(("provider", "to"), [*BAD_DESTINATIONS, ("telegram", 4242)])
def test_a_bad_destination_is_refused_naming_to(provider, to):
    with pytest.raises(ValidationFailed) as caught:
        validate_destination(provider, to)
    assert list(caught.value.errors) == ["to"]
    assert caught.value.message.startswith("to: ")


def test_a_provider_that_sends_nothing_has_no_destination():
    with pytest.raises(ValidationFailed) as caught:
        validate_destination("google_calendar", "primary")
    assert list(caught.value.errors) == ["provider"]


@pytest.mark.parametrize(
    ("provider", "extra", "field"),
    [
        ("whatsapp", {"from_whatsapp": "+14155238886"}, "extra.account_sid"),
        ("whatsapp", {**VALID_EXTRA["whatsapp"], "account_sid": "AC123"}, "extra.account_sid"),
        ("sendgrid", {"from_email": "nope"}, "extra.from_email"),
        ("telegram", {"parse_mode": "BBCode"}, "extra.parse_mode"),
        ("telegram", {"api_key": "x"}, "extra.api_key"),
        ("telegram", {"rate_limit_per_second": 0}, "extra.rate_limit_per_second"),
        ("telegram", {"rate_limit_per_second": True}, "extra.rate_limit_per_second"),
        ("telegram", {"rate_limit_per_second": float("nan")}, "extra.rate_limit_per_second"),
        ("instagram", {"instagram_scoped_id": "abc"}, "extra.instagram_scoped_id"),
        ("telegram", {f"k{i}": 1 for i in range(100)}, "extra"),
    ],
)
def test_bad_extra_is_refused_naming_the_field(provider, extra, field):
    with pytest.raises(ValidationFailed) as caught:
        validate_extra(provider, extra)
    assert field in caught.value.errors


def test_partial_extra_may_leave_out_required_fields():
    assert validate_extra("whatsapp", {"to_whatsapp": "+14155550100"}, partial=True) == {
        "to_whatsapp": "+14155550100"
    }
    with pytest.raises(ValidationFailed):
        validate_extra("whatsapp", {"to_whatsapp": "+14155550100"})


def test_extra_is_normalised_and_calendar_defaults_to_primary():
    assert validate_extra("telegram", {"chat_id": 4242, "rate_limit_per_second": 5}) == {
        "chat_id": "4242",
        "rate_limit_per_second": 5.0,
    }
    assert validate_extra("google_calendar", None) == {"calendar_id": "primary"}


@pytest.mark.parametrize(
    ("provider", "token", "says"),
    [
        ("telegram", "", "required"),
        ("telegram", "   ", "required"),
        ("telegram", None, "required"),
        ("telegram", "no-colon-token", "@BotFather"),
        ("sendgrid", "key-without-prefix", "SG."),
        ("google_calendar", "{not json", "authorized-user JSON"),
        ("google_calendar", json.dumps({"refresh_token": "1//r"}), "client_id, client_secret"),
        ("whatsapp", "x" * 10_000, "at most"),
    ],
)
def test_a_token_of_the_wrong_shape_is_refused_naming_token(provider, token, says):
    with pytest.raises(ValidationFailed) as caught:
        validate_token(provider, token)
    assert list(caught.value.errors) == ["token"]
    assert says in caught.value.errors["token"][0]


def test_a_good_token_is_returned_stripped():
    token = "123456:" + "abcDEF_-x" * 4
    assert validate_token("telegram", f" {token} ") == token
