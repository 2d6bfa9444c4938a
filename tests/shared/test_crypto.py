"""Tokens at rest: ciphertext in the column, MultiFernet decrypts, rotation re-encrypts."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import override_settings

from shared.crypto import decrypt_token, encrypt_token, is_current
from shared.models import Integration
from shared.services.integrations import integration_connect
from tests.factories import CANARY, VALID_EXTRA, make_member

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


@pytest.mark.django_db
def test_rotate_command_reencrypts_every_token_with_the_first_key():
    org = make_member("acme", "alice", "admin").org
    with override_settings(FERNET_KEYS=(OLD_KEY,)):
        for provider in ("telegram", "sendgrid", "whatsapp"):
            integration_connect(
                organization=org,
                provider=provider,
                token=CANARY[provider],
                extra=VALID_EXTRA[provider],
            )
    out = io.StringIO()
    with override_settings(FERNET_KEYS=(NEW_KEY, OLD_KEY)):
        call_command("rotate_fernet_keys", stdout=out)
        assert "Rotated 3 token(s); 0 already current" in out.getvalue()
        again = io.StringIO()
        call_command("rotate_fernet_keys", stdout=again)
        assert "Rotated 0 token(s); 3 already current" in again.getvalue()
    with override_settings(FERNET_KEYS=(NEW_KEY,)):
        for row in Integration.objects.all():
            assert decrypt_token(row.token_encrypted) == CANARY[row.provider]
    assert CANARY["telegram"] not in out.getvalue()


@pytest.mark.django_db
def test_rotate_reports_tokens_no_key_can_decrypt():
    org = make_member("acme", "alice", "admin").org
    with override_settings(FERNET_KEYS=(OLD_KEY,)):
        integration_connect(
            organization=org, provider="telegram", token=CANARY["telegram"], extra={}
        )
    out, err = io.StringIO(), io.StringIO()
    with override_settings(FERNET_KEYS=(NEW_KEY,)):
        call_command("rotate_fernet_keys", stdout=out, stderr=err)
    assert "1 could not be decrypted" in out.getvalue()
    assert "FERNET_KEY" in err.getvalue()
