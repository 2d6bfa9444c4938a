"""shared.providers.fields: the recipient checks every provider spec (and so API, bulk and
send_message) runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.providers import fields

SANDBOX_README = Path(__file__).resolve().parents[3] / "sandbox" / "README.md"

# --- phone numbers (WhatsApp `to`, `from_whatsapp`, `to_whatsapp`) ---------------------------

PHONES = [
    ("+14155550123", "+14155550123"),
    (" whatsapp:+14155238886 ", "+14155238886"),
    ("whatsapp: +14155238886", "+14155238886"),
    ("+1 (415) 555-0123", "+14155550123"),
    ("+44 7911 123456", "+447911123456"),
    ("+44 (0)20 7123 4567", "+442071234567"),  # the trunk 0 is dropped
    ("+34.612.345.678", "+34612345678"),
]


@pytest.mark.parametrize(("value", "e164"), PHONES)
def test_a_valid_number_is_returned_in_e164(value, e164):
    assert fields.phone(value) == e164


REFUSED_PHONES = {
    "no plus": "4155550123",
    "unassigned area code": "+15551234567",
    "unassigned country code": "+999123456789",
    "country code 0": "+0123456789",
    "too short": "+4412",
    "too long": "+1415555012345678",
    "extension": "+14155550123 ext. 7",
    "extension by x": "+14155550123x7",
    "letters": "+1-800-FLOWERS",
    "arabic-indic digits": "+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0662\u0663",
    "full-width digits": "+1415555\uff10\uff11\uff12\uff13",
    "one arabic-indic digit": "+1415523888\u0666",
    "full-width plus": "\uff0b14155550123",
    "empty": "",
    "prefix only": "whatsapp:",
}


@pytest.mark.parametrize("value", REFUSED_PHONES.values(), ids=REFUSED_PHONES.keys())
def test_an_impossible_invalid_or_non_ascii_number_is_refused(value):
    with pytest.raises(ValueError, match="number"):
        fields.phone(value)


@pytest.mark.parametrize("value", [14155550123, None, ["+14155550123"], True])
def test_a_phone_number_must_be_a_string(value):
    with pytest.raises(ValueError, match="string"):
        fields.phone(value)


def test_every_sandbox_magic_number_is_valid():
    """The sandbox's magic recipients are its contract: they must pass the API's check."""
    magic = set(re.findall(r"whatsapp:(\+[0-9]+)", SANDBOX_README.read_text()))

    assert len(magic) >= 9  # the sender and +15005550001…+15005550008
    assert {number: fields.phone(f"whatsapp:{number}") for number in magic} == {
        number: number for number in magic
    }


def test_the_fictional_555_01xx_numbers_of_a_real_area_code_are_valid():
    assert [fields.phone(f"+1415555{n:04d}") for n in (100, 123, 199)] == [
        "+14155550100",
        "+14155550123",
        "+14155550199",
    ]


# --- email addresses (SendGrid `to`, `from_email`, `to_email`) -------------------------------

EMAILS = [
    ("carol@example.test", "carol@example.test"),
    (" Carol@Example.TEST ", "Carol@example.test"),  # the local part keeps its case
    ("bounce@sandbox.test", "bounce@sandbox.test"),  # a sandbox magic recipient
    ("a.b+tag@mail.example.com", "a.b+tag@mail.example.com"),
    ("ana@m\u00fcnchen.example", "ana@xn--mnchen-3ya.example"),
]


@pytest.mark.parametrize(("value", "normalized"), EMAILS)
def test_a_valid_email_is_returned_normalized(value, normalized):
    assert fields.email(value) == normalized


REFUSED_EMAILS = {
    "no at": "not-an-email",
    "two ats": "a@b@example.test",
    "no domain dot": "carol@localhost",
    "bare test domain": "carol@test",
    "special-use domain": "carol@printer.local",
    "display name": "Carol <carol@example.test>",
    "quoted local part": '"carol smith"@example.test',
    "ip literal": "carol@[127.0.0.1]",
    "non-ascii local part": "jos\u00e9@example.test",
    "space": "carol @example.test",
    "empty local part": "@example.test",
    "dot at the end": "carol.@example.test",
    "too long": "a" * 64 + "@" + ("b" * 60 + ".") * 4 + "test",  # 313 > 254
    "empty": "",
}


@pytest.mark.parametrize("value", REFUSED_EMAILS.values(), ids=REFUSED_EMAILS.keys())
def test_an_invalid_email_is_refused(value):
    with pytest.raises(ValueError, match=r"^Must be a valid email address"):
        fields.email(value)


@pytest.mark.parametrize("value", [42, None, b"carol@example.test"])
def test_an_email_must_be_a_string(value):
    with pytest.raises(ValueError, match="string"):
        fields.email(value)


# --- Telegram chat ids ----------------------------------------------------------------------

CHATS = [
    ("4242", "4242"),
    (4242, "4242"),
    (-1001234567890, "-1001234567890"),
    (" -1001234567890 ", "-1001234567890"),
    ("@corbi_news", "@corbi_news"),
    ("@abcde", "@abcde"),
]


@pytest.mark.parametrize(("value", "chat"), CHATS)
def test_a_chat_id_is_an_integer_or_a_channel_name(value, chat):
    assert fields.chat_id(value) == chat


REFUSED_CHATS = {
    "words": "chat 42",
    "short channel": "@abcd",
    "channel with space": "@corbi news",
    "channel starting with a digit": "@1corbi",
    "channel too long": "@" + "a" * 33,
    "no at": "corbi_news",
    "too many digits": "1" * 21,
    "float": 42.0,
    "bool": True,
    "arabic-indic digits": "\u0664\u0662",
    "full-width digits": "\uff14\uff12",
    "empty": "",
}


@pytest.mark.parametrize("value", REFUSED_CHATS.values(), ids=REFUSED_CHATS.keys())
def test_anything_else_is_not_a_chat_id(value):
    with pytest.raises(ValueError, match="Telegram chat id"):
        fields.chat_id(value)
