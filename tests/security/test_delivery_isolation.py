"""One integration's bad rate limit or broken limiter key never stalls another org's messages."""

from __future__ import annotations

import base64
import json
import math
import uuid

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone

from shared.delivery.sweeper import message_sweep
from shared.metrics import Metrics
from shared.models import Integration, MessageStatus
from shared.ratelimit import Limit, RateLimiter
from shared.services.integrations import integration_connect
from tests.factories import CANARY, make_member
from tests.shared.delivery.helpers import deliver_batch, queued

pytestmark = pytest.mark.django_db
OTHER_BOT = "123456789:otherBotTokenForIsolationTests0123"


@pytest.fixture
def client():
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(client):
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


@pytest.fixture
def tools(client, prefix):
    return RateLimiter(client, prefix=prefix + "rl:"), Metrics(client, prefix=prefix + "m:")


@pytest.fixture
def broker(client):
    client.delete("corbi")
    yield client
    client.delete("corbi")


@pytest.fixture
def orgs(sandbox, sandbox_client, settings):
    """Two orgs, each with its own Telegram bot, at the highest rate an admin may set."""
    settings.TELEGRAM_API_BASE = sandbox.url
    sandbox_client.configure(telegram_chat_rate=1000, telegram_bot_rate=1000)
    found = {}
    for slug, user, token in (("acme", "alice", CANARY["telegram"]), ("globex", "gil", OTHER_BOT)):
        sandbox_client.add_account("telegram", token=token, bot_username=f"{slug}_bot")
        org = make_member(slug, user, "admin").org
        integration_connect(
            organization=org,
            provider="telegram",
            token=token,
            extra={"rate_limit_per_second": 10_000},
        )
        found[slug] = org
    return found


def chats(sandbox_client):
    return sorted(
        r["body"]["chat_id"]
        for r in sandbox_client.requests("telegram")
        if r["path"].endswith("/sendMessage")
    )


@pytest.mark.parametrize(
    ("rate", "spacing"),
    [(1e-300, 1000.0), (math.nan, 1000.0), (math.inf, 0.0), (1e300, 0.0)],
    ids=["tiny", "nan", "infinite", "huge"],
)
def test_any_rate_is_clamped_to_what_the_limiter_script_can_represent(tools, rate, spacing):
    # At most one event per 1,000 s (NaN: the most cautious), at least one per microsecond.
    limiter, _ = tools
    limits = [Limit("clamped", rate=rate)]

    first = limiter.reserve(limits)
    answers = limiter.reserve_many([limits, [Limit("other", rate=5)]], max_wait=2000)

    assert first == 0.0
    assert answers[0] == pytest.approx(spacing, abs=0.01)
    assert answers[1] == 0.0
    limiter.pause(limits, math.inf)  # an absurd Retry-After is bounded too


def test_a_tiny_stored_rate_limit_slows_only_its_own_org_and_breaks_nothing(
    orgs, tools, sandbox_client
):
    # A value saved before the API bounded it; the limiter clamps it to one send per 1,000 s.
    Integration.objects.filter(organization=orgs["globex"]).update(
        extra={"rate_limit_per_second": 1e-300}
    )
    mine = [queued(orgs["acme"], str(7000 + i)) for i in range(3)]
    theirs = [queued(orgs["globex"], str(7100 + i)) for i in range(3)]
    ids = [m.pk for pair in zip(mine, theirs, strict=True) for m in pair]

    outcomes = deliver_batch(ids, tools)

    assert [outcomes[m.pk].status for m in mine] == ["sent"] * 3
    assert [outcomes[m.pk].status for m in theirs] == ["sent", "deferred", "deferred"]
    for message in theirs[1:]:
        message.refresh_from_db()
        assert message.status == MessageStatus.QUEUED
        assert (message.next_attempt_at - timezone.now()).total_seconds() > 900
    assert chats(sandbox_client) == ["7000", "7001", "7002", "7100"]


def test_a_limiter_key_redis_refuses_fails_only_its_own_messages_and_shows_why(
    orgs, tools, client, prefix, sandbox_client
):
    # A key holding another type makes the script fail for that key alone (WRONGTYPE).
    client.rpush(f"{prefix}rl:telegram:org:{orgs['globex'].pk}", "not a bucket")
    mine = [queued(orgs["acme"], str(7200 + i)) for i in range(2)]
    theirs = [queued(orgs["globex"], str(7300 + i)) for i in range(2)]
    ids = [mine[0].pk, theirs[0].pk, mine[1].pk, theirs[1].pk]

    outcomes = deliver_batch(ids, tools)

    assert {m.pk: outcomes[m.pk].status for m in mine} == {m.pk: "sent" for m in mine}
    assert {m.pk: outcomes[m.pk].status for m in theirs} == {m.pk: "deferred" for m in theirs}
    for message in theirs:
        message.refresh_from_db()
        assert message.status == MessageStatus.QUEUED and message.retries == 1
        assert message.error_kind == "transient" and message.error_code == "rate_limiter"
        assert "rate limiter" in message.last_error and "ResponseError" in message.last_error
        assert message.next_attempt_at > timezone.now()
    assert chats(sandbox_client) == ["7200", "7201"]


def test_a_limiter_key_that_keeps_failing_fails_its_messages_after_the_retries(
    orgs, tools, client, prefix, settings
):
    settings.DELIVERY_MAX_RETRIES = 1
    client.rpush(f"{prefix}rl:telegram:org:{orgs['globex'].pk}", "not a bucket")
    theirs = queued(orgs["globex"], "7400")

    outcome = deliver_batch([theirs.pk], tools)[theirs.pk]

    theirs.refresh_from_db()
    assert outcome.status == "failed"
    assert theirs.status == MessageStatus.FAILED and theirs.error_code == "rate_limiter"


def published_batches(broker) -> list[list[int]]:
    batches = []
    for raw in broker.lrange("corbi", 0, -1):
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] == "workers.tasks.deliver_messages"
        (ids,) = json.loads(base64.b64decode(envelope["body"]))[0]
        batches.append(ids)
    return batches


def test_the_sweeper_interleaves_integrations_so_one_backlog_never_fills_the_first_batches(
    orgs, broker, settings
):
    settings.DELIVERY_BATCH_SIZE = 4
    backlog = [queued(orgs["acme"], str(7500 + i)) for i in range(8)]  # older: due first
    other = [queued(orgs["globex"], str(7600 + i)) for i in range(2)]
    owner = {m.pk: m.integration_id for m in [*backlog, *other]}

    swept = message_sweep()

    batches = published_batches(broker)[::-1]  # kombu pushes left, workers pop right
    assert sorted(swept) == sorted(owner)
    assert sorted(pk for batch in batches for pk in batch) == sorted(owner)
    assert all(len(batch) <= 4 for batch in batches)
    assert {owner[pk] for pk in batches[0]} == {owner[backlog[0].pk], owner[other[0].pk]}
    assert [pk for batch in batches for pk in batch if owner[pk] == owner[backlog[0].pk]] == [
        m.pk for m in backlog
    ]
