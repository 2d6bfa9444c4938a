"""Adapters on one thread share a keep-alive session that carries no tenant's credentials."""

from __future__ import annotations

from shared.providers import OutboundMessage
from shared.providers.base import shared_session
from shared.providers.instagram import InstagramGraph
from shared.providers.telegram import TelegramBot

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
