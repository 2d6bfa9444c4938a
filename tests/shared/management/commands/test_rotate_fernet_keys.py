"""manage.py rotate_fernet_keys: every stored token re-encrypted under the first key."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import override_settings

from shared.crypto import decrypt_token
from shared.models import Integration
from shared.services.integrations import integration_connect
from tests.factories import CANARY, VALID_EXTRA, make_member

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


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


@pytest.mark.django_db
def test_rotate_reencrypts_message_attachments_too():
    import base64

    from shared.crypto import decrypt_data
    from shared.services.messages import send_message
    from tests.factories import connect

    content = base64.b64encode(b"CANARY-attachment-rotation").decode()
    with override_settings(FERNET_KEYS=(OLD_KEY,)):
        member = connect(make_member("acme", "alice", "admin"), "sendgrid")
        message = send_message(
            member.org,
            "sendgrid",
            "ana@example.test",
            "See attached.",
            subject="Receipt",
            attachments=[{"filename": "r.txt", "content": content}],
        )
    out = io.StringIO()
    with override_settings(FERNET_KEYS=(NEW_KEY, OLD_KEY)):
        call_command("rotate_fernet_keys", stdout=out)
    assert "Rotated the attachments of 1 message(s); 0 already current" in out.getvalue()
    message.refresh_from_db()
    with override_settings(FERNET_KEYS=(NEW_KEY,)):
        assert decrypt_data(message.attachments_encrypted) == f'["{content}"]'
    assert content not in out.getvalue()
