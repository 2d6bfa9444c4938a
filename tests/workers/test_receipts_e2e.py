"""Receipts end to end: real worker → sandbox → signed callbacks → our receivers → statuses."""

from __future__ import annotations

import pytest

from shared.models import Message, MessageEvent, MessageStatus
from shared.receipts.urls import receipts_url
from shared.services.integrations import integration_connect
from shared.services.messages import send_message
from tests.factories import CANARY, SANDBOX_ACCOUNTS, VALID_EXTRA, assert_no_canary, make_member
from tests.workers.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

S = MessageStatus
APP_SECRET = "e2e-meta-app-secret-0a1b2c3d4e5f"
VERIFY = "e2e-verify-token"

# (provider, destination, the status its receipts must end at, provider statuses it records)
CASES = [
    ("whatsapp", "+14155550100", S.DELIVERED, {"sent", "delivered"}),
    ("whatsapp", "+15005550005", S.READ, {"sent", "delivered", "read"}),
    ("whatsapp", "+15005550007", S.READ, {"sent", "delivered", "read"}),  # reversed order
    ("whatsapp", "+15005550008", S.READ, {"sent", "delivered", "read"}),  # every callback twice
    ("whatsapp", "+15005550003", S.UNDELIVERED, {"failed"}),  # 63016
    ("sendgrid", "engaged@sandbox.test", S.READ, {"processed", "delivered", "open", "click"}),
    ("sendgrid", "bounce@sandbox.test", S.BOUNCED, {"processed", "bounce"}),
    ("sendgrid", "dropped@sandbox.test", S.UNDELIVERED, {"dropped"}),
    ("sendgrid", "duplicate@sandbox.test", S.DELIVERED, {"processed", "delivered"}),
    ("instagram", "5601", S.READ, {"message_delivery", "messaging_seen"}),
    ("instagram", "1001", S.DELIVERED, {"message_delivery"}),
    ("instagram", "1002", S.READ, {"message_delivery", "messaging_seen"}),  # read first
    ("telegram", "4242", S.SENT, set()),  # no receipts: sent is final
]


@pytest.fixture
def wired(stack, sandbox_client, live_server, settings):
    """acme with the four messaging providers connected and every receipt path pointed here."""
    org = make_member("acme", "alice", "admin").org
    for name, value in (
        ("PUBLIC_BASE_URL", live_server.url),
        ("META_APP_SECRET", APP_SECRET),
        ("META_WEBHOOK_VERIFY_TOKEN", VERIFY),
    ):
        setattr(settings, name, value)
        stack.env[name] = value
    extra = {"sendgrid": {"event_webhook_public_key": sandbox_client.sendgrid_public_key()}}
    for provider in ("whatsapp", "sendgrid", "telegram", "instagram"):
        sandbox_client.add_account(provider, **SANDBOX_ACCOUNTS[provider])
        integration = integration_connect(
            organization=org,
            provider=provider,
            token=CANARY[provider],
            extra={**VALID_EXTRA[provider], **extra.get(provider, {})},
        )
        if provider == "sendgrid":
            sandbox_client.sendgrid_event_webhook(CANARY["sendgrid"], receipts_url(integration))
    sandbox_client.instagram_webhook(f"{live_server.url}/webhooks/instagram/", VERIFY, APP_SECRET)
    return org


def test_each_provider_s_receipts_reach_the_message_in_order_once(stack, sandbox_client, wired):
    stack.start_worker()
    stack.start_beat()  # the sweeper applies receipts that beat the worker's record of the send
    sent = [
        (send_message(wired, p, to, "hi", subject="Hi" if p == "sendgrid" else ""), final, seen)
        for p, to, final, seen in CASES
    ]

    def settled() -> bool:
        statuses = dict(Message.objects.values_list("pk", "status"))
        recorded: dict[int, set[str]] = {}
        for pk, name in MessageEvent.objects.values_list("message_id", "provider_status"):
            recorded.setdefault(pk, set()).add(name)
        return all(
            statuses[m.pk] == final and recorded.get(m.pk, set()) == seen for m, final, seen in sent
        )

    # Out of order, the final status can come before the last receipt: wait for both.
    wait_for(settled, 90, "every message at its final status with all its receipts recorded")

    for message, final, seen in sent:
        message.refresh_from_db()
        events = list(message.events.values_list("provider_status", flat=True))
        assert message.status == final, (message.to, events)
        assert set(events) == seen and len(events) == len(seen), (message.to, events)
        assert sum(e.applied is True for e in message.events.all()) <= len(seen)
    callbacks = sandbox_client.callbacks()
    assert callbacks and not [c for c in callbacks if c["outcome"] not in ("ok", "pending")]
    assert_no_canary(stack.log_text())
    for message, _, _ in sent:
        assert_no_canary(str(list(message.events.values("raw", "reason"))))
