"""ensure_token_decrypts remembers that a stored token decrypts, per (integration, ciphertext,
FERNET_KEYS): a send does not decrypt it again, and a reconnect, a rotation or a changed key
set is proven afresh, so a message is never queued for an integration whose key is gone."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

import shared.services.keys as keys
from shared.errors import TokenUndecryptable
from shared.models import Integration, Message
from shared.services.integrations import integration_connect
from shared.services.keys import ensure_token_decrypts, integration_tokens_rotate
from shared.services.messages import send_message
from tests.factories import CANARY, make_member

pytestmark = pytest.mark.django_db
OTHER_KEY = Fernet.generate_key().decode()


@pytest.fixture
def decrypts(monkeypatch):
    """The number of decryptions ensure_token_decrypts has done (the proofs start empty)."""
    keys.token_decrypts_forget()
    calls = []
    real = keys.decrypt_token

    def counting(ciphertext: str) -> str:
        calls.append(ciphertext)
        return real(ciphertext)

    monkeypatch.setattr(keys, "decrypt_token", counting)
    yield calls
    keys.token_decrypts_forget()


@pytest.fixture
def telegram():
    member = make_member("acme", "alice", "admin")
    return integration_connect(
        organization=member.org, provider="telegram", token=CANARY["telegram"], extra={}
    )


def fresh(integration: Integration) -> Integration:
    return Integration.objects.get(pk=integration.pk)


def test_a_token_proven_to_decrypt_is_not_decrypted_again(telegram, decrypts):
    for _ in range(3):
        ensure_token_decrypts(fresh(telegram))
        send_message(telegram.organization, "telegram", "4242", "hi")

    assert len(decrypts) == 1
    assert Message.objects.count() == 3


def test_a_changed_key_set_is_proven_afresh_and_a_missing_key_refuses(telegram, decrypts, settings):
    ensure_token_decrypts(fresh(telegram))
    original = list(settings.FERNET_KEYS)

    settings.FERNET_KEYS = [OTHER_KEY]  # the key that encrypted the token is gone
    with pytest.raises(TokenUndecryptable):
        ensure_token_decrypts(fresh(telegram))
    with pytest.raises(TokenUndecryptable):
        send_message(telegram.organization, "telegram", "4242", "hi")
    assert not Message.objects.exists()
    assert fresh(telegram).key_unavailable_at is not None

    settings.FERNET_KEYS = [OTHER_KEY, *original]  # restored behind a new first key
    ensure_token_decrypts(fresh(telegram))
    assert fresh(telegram).key_unavailable_at is None
    assert len(decrypts) == 4  # the first proof, two refusals (never remembered), the new set


def test_a_failure_is_never_remembered(telegram, decrypts, settings):
    original = list(settings.FERNET_KEYS)
    settings.FERNET_KEYS = [OTHER_KEY]
    for _ in range(2):
        with pytest.raises(TokenUndecryptable):
            ensure_token_decrypts(fresh(telegram))
    settings.FERNET_KEYS = original

    ensure_token_decrypts(fresh(telegram))
    assert len(decrypts) == 3


def test_a_reconnect_is_proven_afresh(telegram, decrypts):
    ensure_token_decrypts(fresh(telegram))
    again = integration_connect(
        organization=telegram.organization,
        provider="telegram",
        token=CANARY["telegram"],
        extra={},
    )
    assert again.token_encrypted != telegram.token_encrypted

    ensure_token_decrypts(fresh(again))
    ensure_token_decrypts(fresh(again))
    assert decrypts == [telegram.token_encrypted, again.token_encrypted]


def test_a_rotated_token_is_proven_afresh(telegram, decrypts, settings):
    ensure_token_decrypts(fresh(telegram))
    settings.FERNET_KEYS = [OTHER_KEY, *settings.FERNET_KEYS]
    assert integration_tokens_rotate().rotated == 1
    rotated = fresh(telegram)
    assert rotated.token_encrypted != telegram.token_encrypted

    ensure_token_decrypts(rotated)
    ensure_token_decrypts(fresh(telegram))
    assert decrypts == [telegram.token_encrypted, rotated.token_encrypted]


def test_a_stale_unavailable_flag_is_cleared_on_a_remembered_proof(telegram, decrypts):
    ensure_token_decrypts(fresh(telegram))
    # Another process (with other keys) found it undecryptable; this one has the key.
    Integration.objects.filter(pk=telegram.pk).update(key_unavailable_at=timezone.now())

    ensure_token_decrypts(fresh(telegram))

    assert fresh(telegram).key_unavailable_at is None
    assert len(decrypts) == 1


def test_the_proofs_are_bounded(telegram, decrypts, monkeypatch):
    monkeypatch.setattr(keys, "_DECRYPTS_MAX", 2)
    integration = fresh(telegram)
    for pk in range(1, 6):
        integration.pk = pk
        ensure_token_decrypts(integration)
    assert len(keys._decrypts) <= 2
