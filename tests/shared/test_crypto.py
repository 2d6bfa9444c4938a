"""shared.crypto: ciphertext is not the token, MultiFernet decrypts with any key, encrypts with the first."""

from __future__ import annotations

from cryptography.fernet import Fernet
from django.test import override_settings

from shared.crypto import decrypt_token, encrypt_token, is_current
from tests.factories import CANARY

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def test_ciphertext_is_not_the_token_and_decrypts_back():
    ciphertext = encrypt_token(CANARY["sendgrid"])
    assert CANARY["sendgrid"] not in ciphertext
    assert decrypt_token(ciphertext) == CANARY["sendgrid"]


def test_multifernet_decrypts_with_any_key_and_encrypts_with_the_first():
    with override_settings(FERNET_KEYS=(OLD_KEY,)):
        old_ciphertext = encrypt_token("token-under-old-key")
    with override_settings(FERNET_KEYS=(NEW_KEY, OLD_KEY)):
        assert decrypt_token(old_ciphertext) == "token-under-old-key"
        assert not is_current(old_ciphertext)
        assert is_current(encrypt_token("fresh"))
