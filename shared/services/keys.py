"""Stored-token keys: whether a token still decrypts (a dropped FERNET_KEY), and key rotation."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from shared.crypto import TokenDecryptionError, decrypt_token, is_current, rotate_ciphertext
from shared.errors import TokenUndecryptable
from shared.models import Integration, Message


def integration_key_state_record(
    integration: Integration, *, available: bool, now: datetime | None = None
) -> None:
    """Record whether the integration's token decrypts (`key_unavailable_at`), writing only
    when that changes, so the usual case costs nothing. /health/ and the API read the flag."""
    if available == (integration.key_unavailable_at is None):
        return
    value = None if available else (now or timezone.now())
    Integration.objects.filter(pk=integration.pk).update(key_unavailable_at=value)
    integration.key_unavailable_at = value


def integration_token(integration: Integration) -> str:
    """The decrypted token, recording whether it decrypts; raises TokenDecryptionError when no
    FERNET_KEY decrypts it (an operator problem: the key that encrypted it was dropped)."""
    try:
        token = decrypt_token(integration.token_encrypted)
    except TokenDecryptionError:
        integration_key_state_record(integration, available=False)
        raise
    integration_key_state_record(integration, available=True)
    return token


# Proofs that a stored token decrypts, so that a send need not decrypt it again: Fernet
# decryption (without a TTL, as here) depends only on the ciphertext and the keys, so a
# ciphertext that decrypted once under one FERNET_KEYS always does. The key names the
# integration, a SHA-256 of the ciphertext (a reconnect or a rotation writes a new one) and the
# configured keys themselves (a changed FERNET_KEYS misses); only successes are kept, so a
# token that does not decrypt is tried, and refused, on every send. Bounded; per process.
_DECRYPTS_MAX = 4096
_decrypts: set[tuple[int, bytes, tuple[str, ...]]] = set()
_decrypts_lock = threading.Lock()


def _decrypt_proof(integration: Integration) -> tuple[int, bytes, tuple[str, ...]]:
    digest = hashlib.sha256(integration.token_encrypted.encode()).digest()
    return (integration.pk, digest, tuple(settings.FERNET_KEYS))


def token_decrypts_forget() -> None:
    """Drop every remembered proof that a token decrypts (tests; an operator never needs to)."""
    with _decrypts_lock:
        _decrypts.clear()


def ensure_token_decrypts(integration: Integration) -> None:
    """Raise TokenUndecryptable (HTTP 503) when the integration's stored token decrypts with no
    FERNET_KEY, naming the cause and never a key or the token.

    A ciphertext already seen to decrypt under the current FERNET_KEYS (in this process) is not
    decrypted again; the key-state flag is still cleared if another process had set it."""
    if not integration.token_encrypted:
        return
    proof = _decrypt_proof(integration)
    if proof in _decrypts:
        integration_key_state_record(integration, available=True)
        return
    try:
        integration_token(integration)
    except TokenDecryptionError:
        raise TokenUndecryptable(
            f"{integration.provider} cannot send right now: its stored token does not decrypt "
            "with any configured FERNET_KEY. An operator must restore the FERNET_KEY that "
            "encrypted it; nothing was queued.",
            errors={
                "provider": [
                    f"token_undecryptable: the stored {integration.provider} token does not "
                    "decrypt with any configured FERNET_KEY."
                ]
            },
        ) from None
    with _decrypts_lock:
        if len(_decrypts) >= _DECRYPTS_MAX:
            _decrypts.clear()
        _decrypts.add(proof)


@dataclass
class RotationResult:
    rotated: int = 0
    already_current: int = 0
    failed_ids: list[int] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failed_ids)


def integration_tokens_rotate(*, batch_size: int = 200) -> RotationResult:
    """Re-encrypt each stored token under the first key, one row lock at a time.

    Each row is locked, re-read and rewritten in its own short transaction, so a connect or
    disconnect running at the same moment is never overwritten with a stale token.
    """
    result = RotationResult()
    ids = list(
        Integration.objects.exclude(token_encrypted="").order_by("pk").values_list("pk", flat=True)
    )
    for start in range(0, len(ids), batch_size):
        for pk in ids[start : start + batch_size]:
            with transaction.atomic():
                row = (
                    Integration.objects.select_for_update()
                    .filter(pk=pk)
                    .values_list("token_encrypted", flat=True)
                    .first()
                )
                if not row:
                    continue
                if is_current(row):
                    result.already_current += 1
                    continue
                try:
                    new = rotate_ciphertext(row)
                except TokenDecryptionError:
                    result.failed_ids.append(pk)
                    Integration.objects.filter(pk=pk, key_unavailable_at__isnull=True).update(
                        key_unavailable_at=timezone.now()
                    )
                    continue
                Integration.objects.filter(pk=pk).update(
                    token_encrypted=new, key_unavailable_at=None
                )
                result.rotated += 1
    _saved_access_tokens_rotate()
    return result


def _saved_access_tokens_rotate() -> None:
    """Re-encrypt the saved Google access tokens under the first key; one that no key decrypts
    is dropped (the next task refreshes it). Each row changes only if its ciphertext did not."""
    rows = Integration.objects.exclude(access_token_encrypted="").values_list(
        "pk", "access_token_encrypted"
    )
    for pk, ciphertext in rows:
        if is_current(ciphertext):
            continue
        try:
            new = rotate_ciphertext(ciphertext)
        except TokenDecryptionError:
            new = ""
        changed = {"access_token_encrypted": new}
        if not new:
            changed["access_token_expires_at"] = None
        Integration.objects.filter(pk=pk, access_token_encrypted=ciphertext).update(**changed)


def message_attachments_rotate(*, batch_size: int = 200) -> RotationResult:
    """Re-encrypt the stored attachment contents of messages under the first key.

    Rows are read in primary-key batches and each is rewritten only if its ciphertext has not
    changed meanwhile (one conditional UPDATE), so nothing is held locked and nothing is lost.
    """
    result = RotationResult()
    last = 0
    while True:
        rows = list(
            Message.objects.filter(pk__gt=last)
            .exclude(attachments_encrypted="")
            .order_by("pk")
            .values_list("pk", "attachments_encrypted")[:batch_size]
        )
        if not rows:
            return result
        last = rows[-1][0]
        for pk, ciphertext in rows:
            if is_current(ciphertext):
                result.already_current += 1
                continue
            try:
                new = rotate_ciphertext(ciphertext)
            except TokenDecryptionError:
                result.failed_ids.append(pk)
                continue
            Message.objects.filter(pk=pk, attachments_encrypted=ciphertext).update(
                attachments_encrypted=new
            )
            result.rotated += 1
