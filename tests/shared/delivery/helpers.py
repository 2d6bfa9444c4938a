"""Helpers for the delivery tests: queued Telegram messages, one batch delivered in-process,
and the sandbox's sends."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.utils import timezone

from shared.delivery.batch import message_deliver_batch
from shared.models import Message
from tests.factories import CANARY

BOT = CANARY["telegram"]
OTHER_BOT = "123456789:otherBotTokenForBatchTests0123456"


def queued(org, to="4242", **fields):
    integration = org.integrations.get(provider="telegram")
    fields.setdefault("next_attempt_at", timezone.now())
    return Message.objects.create(
        organization=org,
        integration=integration,
        provider="telegram",
        to=to,
        body="hello",
        **fields,
    )


def sends(sandbox_client):
    return [r for r in sandbox_client.requests("telegram") if r["path"].endswith("/sendMessage")]


def deliver_batch(ids, tools, threads=4):
    """message_deliver_batch on `ids` with the test limiter and metrics and `threads` senders."""
    limiter, metrics = tools
    with ThreadPoolExecutor(threads) as executor:
        return message_deliver_batch(
            message_ids=ids,
            limiter=limiter,
            metrics=metrics,
            executor=executor,
        )
