"""A crash counts as an interruption only for a provider call that started, never for a claim."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from shared.delivery.sweeper import message_sweep
from shared.models import Integration, Message, MessageStatus
from shared.services.integrations import integration_connect
from tests.factories import CANARY, make_member

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]

# One delivery task in a process of its own: one send thread, so one call runs and the other
# claimed messages wait for the thread; the test kills the process mid-call (kill -9).
TASK = """
import os, sys, redis, django
django.setup()
from concurrent.futures import ThreadPoolExecutor
from shared.metrics import Metrics
from shared.ratelimit import RateLimiter
from shared.delivery.batch import message_deliver_batch
client = redis.Redis.from_url(os.environ["REDIS_URL"])
prefix = os.environ["TEST_PREFIX"]
with ThreadPoolExecutor(1) as executor:
    message_deliver_batch(
        message_ids=[int(pk) for pk in sys.argv[1:]],
        limiter=RateLimiter(client, prefix=prefix + "rl:"),
        metrics=Metrics(client, prefix=prefix + "m:"),
        executor=executor,
    )
"""


def wait_for(predicate, timeout: float, what: str):
    """Poll `predicate` until truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.fixture
def admin(sandbox, sandbox_client, settings):
    settings.TELEGRAM_API_BASE = sandbox.url
    sandbox_client.configure(telegram_chat_rate=1000, telegram_bot_rate=1000)
    sandbox_client.add_account("telegram", token=CANARY["telegram"], bot_username="crash_bot")
    member = make_member("acme", "alice", "admin")
    integration_connect(
        organization=member.org, provider="telegram", token=CANARY["telegram"], extra={}
    )
    Integration.objects.filter(organization=member.org).update(
        extra={"rate_limit_per_second": 10_000}
    )
    return member


@pytest.fixture
def env(sandbox):
    prefix = f"test:{uuid.uuid4().hex}:"
    db = connection.settings_dict
    variables = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    variables.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_URL": django_settings.REDIS_URL,
            "TELEGRAM_API_BASE": sandbox.url,
            "PROVIDER_TIMEOUT_SECONDS": "2",
            "DELIVERY_LEASE_SECONDS": "3",
            "TEST_PREFIX": prefix,
        }
    )
    yield variables
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.delete("corbi")  # tasks the sweeper published to this test's broker


def sends(sandbox_client):
    return [r for r in sandbox_client.requests("telegram") if r["path"].endswith("/sendMessage")]


def crash_mid_call(ids, env, sandbox_client):
    """Run one delivery task on `ids`, kill -9 it while its first provider call hangs, and let
    the sweeper take the expired leases back."""
    sandbox_client.fault("telegram", mode="latency", latency_ms=20_000, count=1)
    before = len(sends(sandbox_client))
    proc = subprocess.Popen(
        [sys.executable, "-c", TASK, *map(str, ids)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: len(sends(sandbox_client)) > before or proc.poll() is not None,
            60,
            "a provider call in flight",
        )
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    sandbox_client.clear_faults()
    wait_for(
        lambda: (
            message_sweep() is not None
            and not Message.objects.filter(pk__in=ids, status=MessageStatus.SENDING).exists()
        ),
        30,
        "the sweeper to take the expired leases back",
    )


def detail(client_for, admin, pk):
    response = client_for(admin).get(f"/api/messages/{pk}/")
    assert response.status_code == 200, response.content
    return response.json()


def queued(org, count):
    integration = org.integrations.get(provider="telegram")
    return [
        Message.objects.create(
            organization=org,
            integration=integration,
            provider="telegram",
            to=str(8000 + i),
            body="hello",
            next_attempt_at=timezone.now(),
        ).pk
        for i in range(count)
    ]


def test_a_crash_counts_an_interruption_only_for_the_message_in_a_provider_call(
    admin, env, sandbox_client, client_for
):
    ids = queued(admin.org, 5)

    crash_mid_call(ids, env, sandbox_client)

    in_call, *waiting = (detail(client_for, admin, pk) for pk in ids)
    assert [r["body"]["chat_id"] for r in sends(sandbox_client)] == ["8000"]
    assert (in_call["status"], in_call["attempts"], in_call["interrupted_attempts"]) == (
        "queued",
        1,
        1,
    )
    for body in waiting:
        assert (body["status"], body["attempts"], body["interrupted_attempts"]) == ("queued", 0, 0)
        assert body["attempt_log"] == []


def test_messages_that_were_only_claimed_never_fail_as_interrupted(
    admin, env, sandbox_client, client_for, settings
):
    settings.DELIVERY_MAX_INTERRUPTIONS = 3
    ids = queued(admin.org, 4)

    for _ in range(3):
        crash_mid_call(ids, env, sandbox_client)

    poison, *never_sent = (detail(client_for, admin, pk) for pk in ids)
    assert [r["body"]["chat_id"] for r in sends(sandbox_client)] == ["8000"] * 3
    assert poison["status"] == "failed" and poison["error_code"] == "interrupted"
    assert poison["interrupted_attempts"] == 3
    for body in never_sent:
        assert body["status"] == "queued", body
        assert body["attempts"] == body["interrupted_attempts"] == 0
