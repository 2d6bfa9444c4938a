"""Test Connection is bounded for real: wall-clock deadline, and concurrency per org and per process.

Each test runs real gunicorn servers (threads) against the sandbox with a hanging provider and
fires real concurrent HTTP requests at them.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.db import connection

from devtools import commands
from devtools.procs import Procs, free_port, wait_for
from shared.services.connection_slots import LEASE_PREFIX
from shared.services.integrations import integration_connect
from tests.factories import CANARY, SANDBOX_ACCOUNTS, assert_no_canary, make_member

pytestmark = pytest.mark.django_db(transaction=True)

BUDGET = 2.0
MARGIN = 1.0  # gunicorn, the database and the audit row on top of the budget
FAST = 1.0  # what "stays fast" means for another org's request during the storm


class Server:
    """One gunicorn process (1 worker, `threads` threads) on the test database."""

    def __init__(self, procs: Procs, sandbox_url: str, threads: int, **env: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        db = connection.settings_dict
        environ = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_URL": django_settings.REDIS_URL,
            "PROVIDER_SANDBOX_URL": sandbox_url,
            "TEST_CONNECTION_TIMEOUT_SECONDS": str(BUDGET),
            **{name: str(value) for name, value in env.items()},
        }
        argv = commands.gunicorn(self.port, "--timeout", "60", workers=1, threads=threads)
        self.proc = procs.start(f"gunicorn-{self.port}", argv, environ)
        procs.wait_ready(self.proc, self._answers, 30, f"gunicorn on {self.port}")

    def _answers(self) -> bool:
        return commands.http_status(self.url + "/api/integrations/", timeout=10) is not None


@pytest.fixture
def serve(tmp_path, sandbox):
    procs = Procs(log_dir=tmp_path)

    def start(threads: int = 4, **env: object) -> Server:
        return Server(procs, sandbox.url, threads, **env)

    yield start
    procs.stop_all()


@pytest.fixture
def leases():
    """The per-org lease keys in this test's Redis db, removed before and after."""
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key in client.scan_iter(match=LEASE_PREFIX + "*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(match=LEASE_PREFIX + "*"):
        client.delete(key)
    client.close()


@pytest.fixture
def orgs(sandbox_client, leases):
    """Two orgs with a telegram integration the sandbox knows; telegram then hangs."""
    members = {}
    for slug in ("acme", "globex"):
        member = make_member(slug, f"{slug}-admin", "admin")
        integration_connect(
            organization=member.org, provider="telegram", token=CANARY["telegram"], extra={}
        )
        members[slug] = member
    sandbox_client.add_account("telegram", **SANDBOX_ACCOUNTS["telegram"])
    sandbox_client.fault("telegram", mode="timeout", seconds=120)
    return members


class Timed:
    def __init__(self, response: requests.Response, seconds: float) -> None:
        self.response = response
        self.seconds = seconds


def call(server: Server, member, method: str, path: str) -> Timed:
    headers = {"Authorization": f"Token {member.token}", "X-Org-ID": str(member.org.pk)}
    started = time.monotonic()
    response = requests.request(method, server.url + path, headers=headers, json={}, timeout=60)
    return Timed(response, time.monotonic() - started)


def test_connection(server: Server, member) -> Timed:
    return call(server, member, "POST", "/api/integrations/telegram/test/")


test_connection.__test__ = False  # a helper, not a test


def storm(server: Server, member, count: int) -> list[Timed]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: test_connection(server, member), range(count)))


def hanging_calls(sandbox_client) -> int:
    return sum(r["outcome"] == "timeout" for r in sandbox_client.requests("telegram"))


def assert_busy(timed: Timed) -> int:
    response = timed.response
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["status"] == "error" and body["ok"] is False and body["message"]
    assert body["code"] == "test_connection_busy" and body["errors"]["provider"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= BUDGET + 1 and body["retry_after"] == retry_after
    return retry_after


def assert_timed_out_within_the_budget(timed: Timed) -> None:
    response = timed.response
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is False and body["message"] == f"Telegram did not answer within {BUDGET:g} s"
    assert timed.seconds <= BUDGET + MARGIN, timed.seconds


def test_tests_beyond_the_process_bound_get_429_and_another_org_stays_fast(
    serve, orgs, sandbox_client
):
    server = serve(
        threads=4,
        TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS=2,
        TEST_CONNECTION_MAX_CONCURRENT_PER_ORG=10,
    )

    with ThreadPoolExecutor(max_workers=1) as other:
        tests = ThreadPoolExecutor(max_workers=12)
        fired = [tests.submit(test_connection, server, orgs["acme"]) for _ in range(12)]
        wait_for(lambda: hanging_calls(sandbox_client) >= 2, 10, "two tests hanging")
        listing = other.submit(call, server, orgs["globex"], "GET", "/api/integrations/").result()
        results = [future.result() for future in fired]
        tests.shutdown()

    assert listing.response.status_code == 200 and listing.seconds <= FAST, listing.seconds
    admitted = [r for r in results if r.response.status_code == 200]
    busy = [r for r in results if r.response.status_code != 200]
    assert len(admitted) == 2 and len(busy) == 10
    for timed in admitted:
        assert_timed_out_within_the_budget(timed)
    for timed in busy:
        assert_busy(timed)
        assert timed.seconds <= FAST
        assert_no_canary(timed.response.text)
    assert hanging_calls(sandbox_client) == 2


def test_every_admitted_test_calls_the_provider_and_answers_within_the_budget(
    serve, orgs, sandbox_client
):
    server = serve(
        threads=12,
        TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS=12,
        TEST_CONNECTION_MAX_CONCURRENT_PER_ORG=12,
    )

    started = time.time()
    results = storm(server, orgs["acme"], 12)

    for timed in results:
        assert_timed_out_within_the_budget(timed)
    calls = [r for r in sandbox_client.requests("telegram") if r["outcome"] == "timeout"]
    assert len(calls) == 12
    # Each test got its thread at once: none waited for a pool slot and gave up untried.
    assert max(call["time"] for call in calls) - started < BUDGET / 2


def test_the_org_bound_holds_across_processes_through_redis(serve, orgs, sandbox_client, leases):
    limits = {
        "TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS": 4,
        "TEST_CONNECTION_MAX_CONCURRENT_PER_ORG": 2,
    }
    first, second = serve(threads=6, **limits), serve(threads=6, **limits)

    with ThreadPoolExecutor(max_workers=2) as pool:
        holding = [pool.submit(test_connection, first, orgs["acme"]) for _ in range(2)]
        wait_for(lambda: hanging_calls(sandbox_client) >= 2, 10, "two tests hanging")
        refused = test_connection(second, orgs["acme"])
        other_org = test_connection(second, orgs["globex"])
        held = [future.result() for future in holding]

    assert_busy(refused)
    assert "this organization" in refused.response.json()["message"]
    assert_timed_out_within_the_budget(other_org)
    for timed in held:
        assert_timed_out_within_the_budget(timed)
    wait_for(
        lambda: not leases.zcard(f"{LEASE_PREFIX}{orgs['acme'].org.pk}"), 10, "leases released"
    )
    assert_timed_out_within_the_budget(test_connection(second, orgs["acme"]))


def test_with_redis_down_the_org_bound_falls_back_to_each_process(serve, orgs, sandbox_client):
    server = serve(
        threads=6,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS=4,
        TEST_CONNECTION_MAX_CONCURRENT_PER_ORG=1,
    )

    results = storm(server, orgs["acme"], 3)

    statuses = sorted(r.response.status_code for r in results)
    assert statuses == [200, 429, 429]
    for timed in results:
        if timed.response.status_code == 429:
            assert_busy(timed)
        else:
            assert_timed_out_within_the_budget(timed)


def test_a_helper_thread_still_in_a_socket_keeps_its_slot_until_it_ends(
    serve, leases, sandbox_client
):
    """Google refreshes its token first: a slow refresh and then a hanging calendar call keep
    the helper thread running after the request answered at its deadline; it still counts."""
    member = make_member("initech", "initech-admin", "admin")
    refresh, secret = "1//cnryRefreshTk4Wn8Lx2Pq6Vb3Zs", "cnryClientSecret7Hd2Kf9Qm"
    sandbox_client.add_account(
        "google_calendar", refresh_token=refresh, client_id="cid.apps", client_secret=secret
    )
    token = json.dumps({"refresh_token": refresh, "client_id": "cid.apps", "client_secret": secret})
    integration_connect(organization=member.org, provider="google_calendar", token=token, extra={})
    server = serve(
        threads=4,
        TEST_CONNECTION_MAX_CONCURRENT_PER_PROCESS=1,
        TEST_CONNECTION_MAX_CONCURRENT_PER_ORG=1,
    )
    sandbox_client.fault("google_calendar", mode="latency", latency_ms=1200, count=1, path="/token")
    sandbox_client.fault("google_calendar", mode="timeout", count=1, path="/calendar/v3/")

    def google_test() -> Timed:
        return call(server, member, "POST", "/api/integrations/google_calendar/test/")

    first = google_test()
    assert first.response.status_code == 200 and first.seconds <= BUDGET + MARGIN
    assert first.response.json()["ok"] is False

    assert_busy(google_test())

    recovered = wait_for(
        lambda: (t := google_test()).response.status_code == 200 and t, 3 * BUDGET, "a free slot"
    )
    assert recovered.response.json()["ok"] is True, recovered.response.text
