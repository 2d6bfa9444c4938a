"""The error tables the adapter tests share: how the sandbox answers, and what that must map to."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import pytest

from shared.providers import ProviderError

TIMEOUT = 0.5  # the adapter timeout of the rows whose fault is a provider that never answers


@dataclass(frozen=True)
class Answer:
    """How the sandbox answers the adapter's call.

    fault: a sandbox fault for the next matching request (status, body, retry_after, path, or
    mode="timeout"); to / token / payload: a magic recipient, an unknown credential or an input
    the sandbox refuses on its own; extra: adapter settings (e.g. the sender); account: fields the sandbox account is registered with
    (instead of the defaults); second: the error answers a second call right after a good one;
    unreachable: nothing listens at the adapter's base URL; call: "send" or "check".
    """

    fault: dict[str, Any] | None = None
    to: str | None = None
    token: str | None = None
    payload: Any = None
    extra: dict[str, Any] | None = None
    account: dict[str, Any] | None = None
    second: bool = False
    unreachable: bool = False
    call: str = "send"

    @property
    def timeout(self) -> float:
        return TIMEOUT if (self.fault or {}).get("mode") == "timeout" else 5.0


@dataclass(frozen=True)
class Mapped:
    """The ProviderError an answer must become; retry_after is exact, or a (low, high) range."""

    kind: str
    code: str | None = None
    retry_after: float | tuple[float, float] | None = None
    status: int | None = None
    says: str | None = None  # a part of str(error), when the wording is part of the contract


def _prepare(sandbox_client, provider: str, answer: Answer, account: dict[str, Any]) -> None:
    """Register the provider's account (with the row's fields) and install the row's fault."""
    sandbox_client.add_account(provider, **{**account, **(answer.account or {})})
    if answer.fault is not None:
        sandbox_client.fault(provider, **{"mode": "status", "count": 1, **answer.fault})


def base_url(sandbox_url: str, answer: Answer) -> str:
    """The sandbox's root URL, or a loopback port nobody listens on for `unreachable` rows."""
    if not answer.unreachable:
        return sandbox_url
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def raised(call) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call()
    return caught.value


def provoke(sandbox_client, slug: str, answer: Answer, account: dict[str, Any], adapter, send):
    """Register `account` (with the row's fields) and the row's fault, then make the row's call
    (`send()` or adapter.check(); a good `send()` first for `second` rows): the error raised."""
    _prepare(sandbox_client, slug, answer, account)
    if answer.second:
        send()
    return raised(adapter.check if answer.call == "check" else send)


def assert_mapped(
    err: ProviderError, mapped: Mapped, assert_secret_free, secrets: list[str]
) -> None:
    """`err` is what the row maps to, and carries none of `secrets`."""
    assert (err.kind, err.code, err.status) == (mapped.kind, mapped.code, mapped.status), repr(err)
    if isinstance(mapped.retry_after, tuple):
        low, high = mapped.retry_after
        assert err.retry_after is not None and low <= err.retry_after <= high, repr(err)
    else:
        assert err.retry_after == mapped.retry_after, repr(err)
    if mapped.says is not None:
        assert mapped.says in str(err), str(err)
    for secret in secrets:
        assert_secret_free(err, secret)
