"""Fixtures for the delivery tests: a Telegram org on the sandbox, a limiter and metrics."""

from __future__ import annotations

import pytest

from shared.services.integrations import integration_connect
from tests.factories import make_member
from tests.shared.delivery.helpers import BOT


@pytest.fixture
def org(sandbox, sandbox_client, settings):
    settings.TELEGRAM_API_BASE = sandbox.url
    sandbox_client.configure(telegram_chat_rate=1000, telegram_bot_rate=1000)
    sandbox_client.add_account("telegram", token=BOT, bot_username="corbi_unit_bot")
    org = make_member("acme", "alice", "admin").org
    integration_connect(organization=org, provider="telegram", token=BOT, extra={})
    return org
