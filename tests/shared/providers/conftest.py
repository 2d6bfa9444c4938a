"""Fixtures for the provider adapter tests: the sandbox root and a secret-leak check."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from shared.providers import ProviderError


@pytest.fixture
def sandbox_url(sandbox, sandbox_client) -> str:
    """Root URL of a freshly reset sandbox."""
    return sandbox.url.rstrip("/")


def fragments(secret: str, size: int = 8) -> set[str]:
    """Every `size`-character slice of `secret`."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


@pytest.fixture
def assert_secret_free() -> Callable[[ProviderError, str], None]:
    """Assert a ProviderError carries no part of `secret`, nor the original exception."""

    def check(err: ProviderError, secret: str) -> None:
        assert err.__cause__ is None
        assert err.__context__ is None
        texts = [str(err), repr(err), err.message, *map(str, err.args)]
        blob = pickle.dumps(err)
        for piece in fragments(secret) | {secret}:
            assert not any(piece in text for text in texts), piece
            assert piece.encode() not in blob, piece

    return check
