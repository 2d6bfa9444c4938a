"""The provider contract without a network: the error type, the registry and pure helpers."""

from __future__ import annotations

import copy
import pickle
import re

import pytest

from shared.providers import PROVIDERS, SLUGS, OutboundMessage, ProviderError, build_adapter
from shared.providers.base import retry_after_seconds
from shared.providers.google_calendar import GoogleCalendar
from shared.providers.whatsapp import whatsapp_address

SID = "AC" + "0" * 32


def make_error(**overrides: object) -> ProviderError:
    fields: dict = {
        "kind": "rate_limited",
        "provider": "telegram",
        "code": "429",
        "retry_after": 7,
        "status": 429,
    }
    fields.update(overrides)
    return ProviderError("Telegram is throttling this bot", **fields)


def test_provider_error_str_is_its_message():
    assert str(make_error()) == "Telegram is throttling this bot"


def test_provider_error_pickles_with_every_field():
    err = make_error()
    for copied in (pickle.loads(pickle.dumps(err)), copy.deepcopy(err)):
        assert isinstance(copied, ProviderError)
        assert repr(copied) == repr(err)
        assert copied.retry_after == 7.0


@pytest.mark.parametrize(
    ("kind", "permanent", "credentials", "rate_limited"),
    [
        ("permanent", True, False, False),
        ("credentials", True, True, False),
        ("transient", False, False, False),
        ("rate_limited", False, False, True),
    ],
)
def test_provider_error_properties_follow_kind(kind, permanent, credentials, rate_limited):
    err = make_error(kind=kind)
    assert (err.permanent, err.credentials_rejected, err.rate_limited) == (
        permanent,
        credentials,
        rate_limited,
    )


def test_provider_error_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        make_error(kind="fatal")


def test_provider_error_code_is_always_a_string():
    assert make_error(code=21211).code == "21211"


def test_registry_lists_the_five_slugs_in_order():
    assert SLUGS == ("whatsapp", "sendgrid", "telegram", "instagram", "google_calendar")
    assert all(PROVIDERS[slug].slug == slug for slug in SLUGS)
    assert all(PROVIDERS[slug].label for slug in SLUGS)


def test_build_adapter_rejects_an_unknown_slug():
    with pytest.raises(KeyError, match="unknown provider"):
        build_adapter("fax", token="x", extra={}, base_url="http://127.0.0.1:9", timeout=1)


def test_outbound_message_is_frozen():
    message = OutboundMessage(to="+15551234567", body="hi")
    with pytest.raises(AttributeError):
        message.body = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("slug", "token", "extra"),
    [
        ("whatsapp", "secret-token", {"account_sid": "AC123", "from_whatsapp": "+14155238886"}),
        ("telegram", "not-a-bot-token", {}),
        ("instagram", "IGAAtoken", {}),
        ("google_calendar", '{"refresh_token": "1//r"}', {}),
        ("sendgrid", "", {"from_email": "a@b.test"}),
    ],
)
def test_malformed_credentials_are_rejected_when_building(slug, token, extra):
    with pytest.raises(ProviderError) as caught:
        build_adapter(slug, token=token, extra=extra, base_url="http://127.0.0.1:9", timeout=1)
    assert caught.value.credentials_rejected
    assert caught.value.provider == slug
    if token:
        assert token not in str(caught.value)


def test_calendar_event_id_is_stable_base32hex():
    event_id = GoogleCalendar.event_id_for("booking-42")
    assert event_id == GoogleCalendar.event_id_for("booking-42")
    assert event_id != GoogleCalendar.event_id_for("booking-43")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", event_id)
    assert event_id == "nqin96p834oqrmn3fsr6j5n9l8pc7oj2itv40d6pk66vrhv2uuag"


def test_calendar_send_is_a_permanent_error():
    calendar = GoogleCalendar(token="ya29.x", extra={}, base_url="http://127.0.0.1:9/calendar/v3")
    with pytest.raises(ProviderError) as caught:
        calendar.send(OutboundMessage(to="x", body="y"))
    assert caught.value.kind == "permanent"


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+15551234567", "whatsapp:+15551234567"),
        ("whatsapp:+15551234567", "whatsapp:+15551234567"),
        (" 15551234567 ", "whatsapp:+15551234567"),
    ],
)
def test_whatsapp_addresses_always_carry_the_prefix(number, expected):
    assert whatsapp_address(number) == expected


def test_retry_after_reads_seconds_and_dates_and_falls_back():
    assert retry_after_seconds("7", 1.0) == 7.0
    assert retry_after_seconds(None, 3.0) == 3.0
    assert retry_after_seconds("soon", 3.0) == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 3.0) == 0.0
