"""Fernet encryption of provider tokens (MultiFernet: the first key encrypts, every key decrypts)."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from shared.redaction import remember_secret


class TokenDecryptionError(Exception):
    """The stored ciphertext does not decrypt with any configured key."""


@lru_cache(maxsize=4)
def _multi(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _fernet() -> MultiFernet:
    return _multi(tuple(settings.FERNET_KEYS))


def encrypt_token(token: str) -> str:
    """Ciphertext of `token` under the first FERNET_KEY; the value is also scrubbed from logs."""
    remember_secret(token)
    return _fernet().encrypt(token.encode()).decode()


def decrypt_token(ciphertext: str) -> str:
    """The plaintext token; raises TokenDecryptionError (without any key or value) on failure."""
    try:
        token = _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError(
            "The stored token does not decrypt with any FERNET_KEY."
        ) from None
    remember_secret(token)
    return token


def rotate_ciphertext(ciphertext: str) -> str:
    """The same token re-encrypted under the first FERNET_KEY."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError(
            "The stored token does not decrypt with any FERNET_KEY."
        ) from None


def is_current(ciphertext: str) -> bool:
    """Whether `ciphertext` already decrypts with the first (encrypting) key."""
    try:
        Fernet(settings.FERNET_KEYS[0]).decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


def token_fingerprint(token: str) -> str:
    """A short, non-reversible identifier of a token for audit records (first 12 hex of SHA-256)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def encrypt_data(plaintext: str) -> str:
    """Ciphertext of message data (attachment contents) under the first FERNET_KEY.

    Unlike encrypt_token, the value is not remembered for log scrubbing: it is data, not a
    credential, and may be megabytes; it is kept out of logs by never being logged.
    """
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_data(ciphertext: str) -> str:
    """The plaintext of encrypt_data; raises TokenDecryptionError (without a value) on failure."""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError(
            "The stored data does not decrypt with any FERNET_KEY."
        ) from None
