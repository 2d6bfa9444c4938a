"""corbi.env: typed environment reads that fail loudly, naming the variable and never a value."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from corbi.env import env_bool, env_float, env_int, env_list, env_str, require_fernet_keys

NAME = "CORBI_TEST_ENV_VALUE"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("off", False),
        ("", False),
    ],
)
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv(NAME, raw)
    assert env_bool(NAME, not expected) is expected


def test_unset_variables_give_the_default(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    assert env_str(NAME, "d") == "d"
    assert env_bool(NAME, True) is True
    assert env_int(NAME, 7) == 7
    assert env_float(NAME, 0.5) == 0.5
    assert env_list(NAME, ["a"]) == ["a"]


def test_blank_numbers_give_the_default_and_strings_are_stripped(monkeypatch):
    monkeypatch.setenv(NAME, "  ")
    assert env_int(NAME, 7) == 7
    assert env_float(NAME, 0.5) == 0.5
    assert env_str(NAME, "d") == ""


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv(NAME, " a, b ,,c ")
    assert env_list(NAME, []) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("read", "raw"),
    [(env_bool, "maybe"), (env_int, "1.5"), (env_int, "ten"), (env_float, "fast")],
)
def test_a_malformed_value_stops_startup_naming_the_variable_not_the_value(monkeypatch, read, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured) as caught:
        read(NAME, 0)
    assert NAME in str(caught.value)
    assert raw not in str(caught.value)


def test_fernet_keys_first_encrypts_all_listed_are_returned(monkeypatch):
    first, second = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv(NAME, f" {first} , {second} ")
    assert require_fernet_keys(NAME) == (first, second)


@pytest.mark.parametrize("raw", ["", " , ", "not-a-key", "c2hvcnRrZXk="])
def test_missing_or_invalid_fernet_keys_stop_startup_without_echoing_them(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured) as caught:
        require_fernet_keys(NAME)
    assert NAME in str(caught.value)
    if raw.strip(" ,"):
        assert raw not in str(caught.value)
        assert "key #1 of 1" in str(caught.value)


def test_the_position_of_a_bad_key_is_named(monkeypatch):
    good = Fernet.generate_key().decode()
    monkeypatch.setenv(NAME, f"{good},garbageKeyValue123")
    with pytest.raises(ImproperlyConfigured, match="key #2 of 2"):
        require_fernet_keys(NAME)
