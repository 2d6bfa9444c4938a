"""End-to-end fixtures: real worker and beat processes on Postgres + Redis + the sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from shared.metrics import Metrics
from tests.factories import CANARY, assert_no_canary

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns truthy or `timeout` passes (a bounded wait on a condition)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Stack:
    """Worker/beat processes for one test; logs are kept for leak checks."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list[Path] = []

    def start_worker(self, name: str = "w1", concurrency: int = 8) -> subprocess.Popen:
        log = self.tmp_path / f"{name}.log"
        self.logs.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "corbi",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "DEBUG",
                "--hostname",
                f"{name}@e2e",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        metrics = Metrics(redis.Redis.from_url(self.env["REDIS_URL"]))
        wait_for(
            lambda: f"{name}@e2e" in metrics.workers_seen_within(30) or proc.poll() is not None,
            30,
            f"worker {name}",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        return proc

    def start_beat(self) -> subprocess.Popen:
        log = self.tmp_path / "beat.log"
        self.logs.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "corbi",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.tmp_path / "beat-schedule"),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs["beat"] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in list(self.procs.values()):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@pytest.fixture
def broker():
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def stack(transactional_db, sandbox, sandbox_client, broker, settings, tmp_path):
    """Point this process and the workers at the sandbox; yields a Stack to start processes."""
    settings.TWILIO_API_BASE = settings.SENDGRID_API_BASE = settings.TELEGRAM_API_BASE = sandbox.url
    settings.GRAPH_API_BASE = sandbox.url + "/v23.0"
    settings.GOOGLE_CALENDAR_API_BASE = sandbox.url + "/calendar/v3/"
    settings.GOOGLE_TOKEN_URI = sandbox.url + "/token"
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "corbi.settings",
            "CORBI_DOTENV": "0",
            "FERNET_KEY": ",".join(django_settings.FERNET_KEYS),
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_URL": django_settings.CELERY_BROKER_URL,
            "PROVIDER_SANDBOX_URL": sandbox.url,
            "PROVIDER_TIMEOUT_SECONDS": "2",
            "DELIVERY_LEASE_SECONDS": "4",
            "DELIVERY_BACKOFF_BASE_SECONDS": "0.2",
            "SWEEPER_INTERVAL_SECONDS": "1",
            "SWEEPER_GRACE_SECONDS": "3",
            "LOG_LEVEL": "DEBUG",
        }
    )
    procs = Stack(tmp_path, env)
    yield procs
    procs.stop()
    assert_no_canary(procs.log_text(), CANARY)
