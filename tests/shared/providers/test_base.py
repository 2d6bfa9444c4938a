"""shared.providers.base: the error type, the message, Retry-After and the shared keep-alive session."""

from __future__ import annotations

import copy
import pickle

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.base import retry_after_seconds, shared_session
from shared.providers.instagram import InstagramGraph
from shared.providers.telegram import TelegramBot


def make_error(**overrides: object) -> ProviderError:
    fields: dict = {
        "kind": "rate_limited",
        "provider": "telegram",
        "code": "429",
        "retry_after": 7,
        "status": 429,
    }
    fields.update(overrides)
    return ProviderError("Telegram is throttling this bot", **fields)


def test_provider_error_str_is_its_message():
    assert str(make_error()) == "Telegram is throttling this bot"


def test_provider_error_pickles_with_every_field():
    err = make_error()
    for copied in (pickle.loads(pickle.dumps(err)), copy.deepcopy(err)):
        assert isinstance(copied, ProviderError)
        assert repr(copied) == repr(err)
        assert copied.retry_after == 7.0


@pytest.mark.parametrize(
    ("kind", "permanent", "credentials", "rate_limited"),
    [
        ("permanent", True, False, False),
        ("credentials", True, True, False),
        ("transient", False, False, False),
        ("rate_limited", False, False, True),
    ],
)
def test_provider_error_properties_follow_kind(kind, permanent, credentials, rate_limited):
    err = make_error(kind=kind)
    assert (err.permanent, err.credentials_rejected, err.rate_limited) == (
        permanent,
        credentials,
        rate_limited,
    )


def test_provider_error_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        make_error(kind="fatal")


def test_provider_error_code_is_always_a_string():
    assert make_error(code=21211).code == "21211"


def test_outbound_message_is_frozen():
    message = OutboundMessage(to="+15551234567", body="hi")
    with pytest.raises(AttributeError):
        message.body = "changed"  # type: ignore[misc]


def test_retry_after_reads_seconds_and_dates_and_falls_back():
    assert retry_after_seconds("7", 1.0) == 7.0
    assert retry_after_seconds(None, 3.0) == 3.0
    assert retry_after_seconds("soon", 3.0) == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 3.0) == 0.0


# --- one keep-alive session per thread, no tenant's credentials on it --------------------------

TENANTS = {
    "17841400000000011": "IGAAtenantONEaccessTOKENabcdefghijk",
    "17841400000000022": "IGAAtenantTWOaccessTOKENlmnopqrstuv",
}


def test_two_tenants_on_one_thread_each_send_with_their_own_token(sandbox_url, sandbox_client):
    for ig_id, token in TENANTS.items():
        sandbox_client.add_account(
            "instagram", access_token=token, ig_id=ig_id, username=f"u{ig_id[-2:]}"
        )

    for ig_id, token in TENANTS.items():
        adapter = InstagramGraph(
            token=token, extra={"instagram_scoped_id": ig_id}, base_url=f"{sandbox_url}/v23.0"
        )
        adapter.send(OutboundMessage(to="1234567890", body="hello"))

    recorded = [r for r in sandbox_client.requests("instagram") if r["path"].endswith("/messages")]
    assert [r["status"] for r in recorded] == [200, 200]
    for request, (ig_id, token) in zip(recorded, TENANTS.items(), strict=True):
        assert ig_id in request["path"]
        assert request["headers"]["Authorization"] == f"Bearer {token}"
    session = shared_session()
    assert "Authorization" not in session.headers
    assert len(session.cookies) == 0


def test_the_session_is_reused_across_adapters_on_a_thread(sandbox_url):
    bot = "123456789:sessionREUSEbotTOKENabcdefghijklmnop"
    first = TelegramBot(token=bot, extra={}, base_url=sandbox_url)
    second = TelegramBot(token=bot, extra={}, base_url=sandbox_url)
    assert first._session is second._session is shared_session()
