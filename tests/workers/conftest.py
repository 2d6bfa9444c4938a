"""End-to-end fixtures: real worker and beat processes on Postgres + Redis + the sandbox."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from devtools import commands
from devtools.procs import Proc, Procs, wait_for
from shared.metrics import Metrics
from tests.factories import CANARY, assert_no_canary, point_providers_at

__all__ = ["Stack", "wait_for"]  # wait_for: imported from here by the e2e tests


class Stack:
    """Worker/beat processes for one test; logs are kept for leak checks."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.running = Procs(log_dir=tmp_path)

    @property
    def procs(self) -> dict[str, Proc]:
        return self.running.by_name()

    def start_worker(self, name: str = "w1", concurrency: int = 8) -> Proc:
        hostname = f"{name}@e2e"
        argv = commands.celery_worker(
            hostname, *commands.ISOLATED, pool="threads", concurrency=concurrency, loglevel="DEBUG"
        )
        proc = self.running.start(name, argv, self.env)
        metrics = Metrics(redis.Redis.from_url(self.env["REDIS_URL"]))
        self.running.wait_ready(proc, lambda: hostname in metrics.workers_seen_within(30), 30)
        return proc

    def start_beat(self) -> Proc:
        schedule = self.tmp_path / "beat-schedule"
        return self.running.start("beat", commands.celery_beat(schedule), self.env)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.running.kill(self.procs[name], sig, timeout=30)

    def stop(self) -> None:
        self.running.stop_all()
        self.running.reopen()

    def log_text(self) -> str:
        return self.running.log_text()


@pytest.fixture
def broker():
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def stack(transactional_db, sandbox, sandbox_client, broker, settings, tmp_path):
    """Point this process and the workers at the sandbox; yields a Stack to start processes."""
    point_providers_at(settings, sandbox.url)
    db = connection.settings_dict
    env = commands.stack_env(
        fernet_key=",".join(django_settings.FERNET_KEYS),
        database_url=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        redis_url=django_settings.CELERY_BROKER_URL,
        sandbox_url=sandbox.url,
        drop=("PYTEST", "DJANGO_SETTINGS"),
        LOG_LEVEL="DEBUG",
        **commands.delivery_timings(
            provider_timeout=2, lease=4, backoff=0.2, sweep_every=1, grace=3
        ),
    )
    procs = Stack(tmp_path, env)
    yield procs
    procs.stop()
    assert_no_canary(procs.log_text(), CANARY)
