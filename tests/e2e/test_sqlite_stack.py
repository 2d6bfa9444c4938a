"""The default embedded stack (SQLite) delivers a 1,000-message bulk with no lock errors."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import redis
import requests

from devtools import commands, devstack
from devtools.procs import Procs, manage, wait_for
from tests.factories import CANARY, SANDBOX_ACCOUNTS, VALID_EXTRA, assert_no_canary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

REDIS_URL = "redis://127.0.0.1:6379/6"
FERNET_KEY = "x8bJ4h9pTQ2mD6qWz1yV3nR5sK7uL0aC9eF2gH4iJ6k="
BULK = 1000
CREATE_ADMIN = ("create_member", "--org", "demo", "--username", "a", "--role", "admin")
DESTINATIONS = {
    "whatsapp": "+14155550100",
    "sendgrid": "someone@example.test",
    "instagram": "1234567890",
}


@pytest.fixture
def sqlite_stack(tmp_path, sandbox, sandbox_client):
    """Web and one worker on a SQLite file, configured the way `make run` configures them."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    db_file = tmp_path / "corbi.sqlite3"
    env = commands.stack_env(
        fernet_key=FERNET_KEY,
        database_url=f"sqlite:///{db_file}",
        redis_url=REDIS_URL,
        sandbox_url=sandbox.url,
        drop=("PYTEST", "DJANGO_", "CELERY_", "DATABASE_URL", "REDIS_URL"),
        CELERY_BROKER_URL=REDIS_URL,
    )
    for provider in DESTINATIONS:
        sandbox_client.add_account(provider, **SANDBOX_ACCOUNTS[provider])
    procs = Procs(log_dir=tmp_path)
    port = devstack.free_port()
    try:
        run(env, "migrate", "--noinput")
        admin = json.loads(run(env, *CREATE_ADMIN))
        procs.start("web", devstack.web_command(port), env)
        worker = procs.start("worker", devstack.worker_command(env, "sqlite-worker@%h"), env)
        procs.wait_ready(worker, lambda: " ready." in worker.log_text(), 30, "the worker")
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: devstack.port_open("127.0.0.1", port), 30, "the web server")
        yield base, admin, db_file, procs
    finally:
        procs.stop_all()
        client.flushdb()


def run(env: dict[str, str], *args: str) -> str:
    result = manage(*args, env=env, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


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
