"""GET /metrics keeps answering 200 when Redis or the database is down, each source failing alone."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
import redis
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db(transaction=False)

OUTBOX = {"corbi_outbox_messages", "corbi_outbox_oldest_age_seconds"}
STORE = {"corbi_sends", "corbi_provider_latency_seconds", "corbi_workers_alive"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def own_redis():
    """A private redis-server this test may stop (never the shared one on 6379)."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        wait_until(lambda: answers(client), 10, "the private redis-server")
        yield proc, f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def scrape(response) -> dict[str, dict[tuple, float]]:
    """{family name: {sorted labels: value}} from a /metrics response."""
    assert response.status_code == 200, response.content[:500]
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(response.content.decode())
    }


def up(families: dict, name: str) -> float:
    return families[name][()]


def get_metrics_with_database_on(port: int):
    """GET /metrics served by a thread whose own database connection points at `port`.

    Django gives each thread its own connection, so only that thread sees the unreachable
    database; the test's connection (and its transaction) is untouched.
    """
    outcome: dict[str, object] = {}

    def serve() -> None:
        connection = connections[DEFAULT_DB_ALIAS]
        connection.settings_dict = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": port}
        try:
            outcome["response"] = Client(raise_request_exception=False).get("/metrics")
        finally:
            connection.close()

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "/metrics did not answer within 30 s"
    return outcome["response"]


def test_scrape_answers_200_with_the_store_down_when_its_redis_stops(settings, own_redis):
    proc, url = own_redis
    settings.REDIS_URL = url
    client = Client(raise_request_exception=False)

    before = scrape(client.get("/metrics"))
    assert up(before, "corbi_metrics_store_up") == 1 and up(before, "corbi_database_up") == 1
    assert STORE <= before.keys() and OUTBOX <= before.keys()

    proc.terminate()
    proc.wait(timeout=10)
    after = scrape(client.get("/metrics"))

    assert up(after, "corbi_metrics_store_up") == 0
    assert not STORE & after.keys()
    assert up(after, "corbi_database_up") == 1
    assert OUTBOX <= after.keys()
    assert any(name.startswith("process_") for name in after)


def test_scrape_answers_200_with_the_database_down_and_keeps_the_redis_families():
    response = get_metrics_with_database_on(free_port())

    families = scrape(response)
    assert up(families, "corbi_database_up") == 0
    assert not OUTBOX & families.keys()
    assert up(families, "corbi_metrics_store_up") == 1
    assert STORE <= families.keys()


def test_scrape_answers_200_with_both_down_reporting_both_sources_down(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    families = scrape(get_metrics_with_database_on(free_port()))

    assert up(families, "corbi_database_up") == 0
    assert up(families, "corbi_metrics_store_up") == 0
    assert not (OUTBOX | STORE) & families.keys()
    assert any(name.startswith("process_") for name in families)


def test_the_database_connection_is_usable_again_after_a_scrape_with_it_down():
    get_metrics_with_database_on(free_port())

    families = scrape(Client().get("/metrics"))

    assert up(families, "corbi_database_up") == 1
    assert families["corbi_outbox_messages"][(("status", "queued"),)] == 0
