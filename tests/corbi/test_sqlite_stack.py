"""The default embedded stack (SQLite) delivers a 1,000-message bulk with no lock errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from corbi import devstack
from tests.factories import CANARY, SANDBOX_ACCOUNTS, VALID_EXTRA, assert_no_canary
from tests.workers.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/6"
FERNET_KEY = "x8bJ4h9pTQ2mD6qWz1yV3nR5sK7uL0aC9eF2gH4iJ6k="
BULK = 1000
DESTINATIONS = {
    "whatsapp": "+15551234567",
    "sendgrid": "someone@example.test",
    "instagram": "1234567890",
}


class Processes:
    """Child processes of one test, each with a log file, stopped together."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def run(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def start(self, name: str, argv: list[str]) -> Path:
        log = self.tmp_path / f"{name}.log"
        self.logs.append(log)
        self.procs.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=log.open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        return log

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@pytest.fixture
def sqlite_stack(tmp_path, sandbox, sandbox_client):
    """Web and one worker on a SQLite file, configured the way `make run` configures them."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    db_file = tmp_path / "corbi.sqlite3"
    skip = ("PYTEST", "DJANGO_", "CELERY_", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "corbi.settings",
            "CORBI_DOTENV": "0",
            "FERNET_KEY": FERNET_KEY,
            "DATABASE_URL": f"sqlite:///{db_file}",
            "REDIS_URL": REDIS_URL,
            "CELERY_BROKER_URL": REDIS_URL,
            "PROVIDER_SANDBOX_URL": sandbox.url,
        }
    )
    for provider in DESTINATIONS:
        sandbox_client.add_account(provider, **SANDBOX_ACCOUNTS[provider])
    procs = Processes(tmp_path, env)
    port = devstack.free_port()
    try:
        procs.run("migrate", "--noinput")
        admin = devstack.json.loads(
            procs.run("create_member", "--org", "demo", "--username", "a", "--role", "admin")
        )
        procs.start("web", devstack.web_command(port))
        worker_log = procs.start("worker", devstack.worker_command(env, "sqlite-worker@%h"))
        wait_for(lambda: " ready." in worker_log.read_text(), 30, "the worker")
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: devstack.port_open("127.0.0.1", port), 30, "the web server")
        yield base, admin, db_file, procs
    finally:
        procs.stop()
        client.flushdb()


def statuses(db_file: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM shared_message GROUP BY status")
        return dict(rows.fetchall())


def test_a_1000_message_bulk_on_sqlite_is_all_sent_with_no_lock_error(sqlite_stack):
    base, admin, db_file, procs = sqlite_stack
    api = requests.Session()
    api.trust_env = False
    api.headers.update(
        {"Authorization": f"Token {admin['token']}", "X-Org-ID": str(admin["org_id"])}
    )
    for provider in DESTINATIONS:
        body = {"token": CANARY[provider], "extra": VALID_EXTRA[provider]}
        connected = api.post(f"{base}/api/integrations/{provider}/connect/", json=body, timeout=30)
        assert connected.status_code == 200, connected.text
    providers = list(DESTINATIONS)
    messages = [
        {
            "provider": (provider := providers[i % len(providers)]),
            "to": DESTINATIONS[provider],
            "body": f"bulk message {i}",
            "subject": "Bulk" if provider == "sendgrid" else "",
        }
        for i in range(BULK)
    ]

    started = time.monotonic()
    response = api.post(f"{base}/api/messages/bulk/", json={"messages": messages}, timeout=60)
    assert response.status_code == 202, response.text[:2000]
    wait_for(
        lambda: (
            statuses(db_file).get("sent") == BULK
            or "database is locked" in procs.log_text()
            or (statuses(db_file).get("failed", 0) > 0)
        ),
        90,  # 7-9 s on an idle 2-core host; generous for a loaded CI machine
        "every message sent",
        interval=0.5,
    )
    elapsed = time.monotonic() - started

    logs = procs.log_text()
    locks = logs.count("database is locked")
    assert locks == 0, (
        f"{locks} lock error(s):\n" + logs[logs.find("database is locked") - 1500 :][:2000]
    )
    assert statuses(db_file) == {"sent": BULK}, statuses(db_file)
    assert_no_canary(logs)
    print(f"\n{BULK} messages sent on SQLite in {elapsed:.1f} s, lock errors: 0")
