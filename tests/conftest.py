"""Shared pytest fixtures: the cast of users, API clients, Redis and the provider sandbox."""

from __future__ import annotations

import os
import uuid

import pytest

# Local webhook receivers, endpoints and events for the events-out tests (tests/receivers.py).
pytest_plugins = ["tests.receivers"]

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def sandbox():
    """One sandbox process (python -m sandbox) for the whole session, on a free loopback port."""
    from sandbox.testing import SandboxProcess

    with SandboxProcess() as proc:
        yield proc


@pytest.fixture
def sandbox_client(sandbox):
    """The sandbox's control client, reset (accounts, faults, recordings) before each test."""
    sandbox.client.reset()
    yield sandbox.client
    sandbox.client.reset()


@pytest.fixture
def cast(db):
    """An org with an admin and a member, and another org whose admin is the outsider."""
    from tests.factories import make_member

    admin = make_member("acme", "alice", "admin")
    member = make_member("acme", "bob", "member")
    outsider = make_member("globex", "mallory", "admin")
    return {"admin": admin, "member": member, "outsider": outsider}


@pytest.fixture
def client_for():
    """client_for(member_or_None, org_id=..., **APIClient kwargs) → a client by token + X-Org-ID."""
    from tests.factories import api_client

    return api_client


@pytest.fixture
def providers_on_sandbox(settings, sandbox) -> str:
    """Every provider base URL points at the session's sandbox; returns its URL."""
    from tests.factories import point_providers_at

    point_providers_at(settings, sandbox.url)
    return sandbox.url


@pytest.fixture
def tools():
    """(RateLimiter, Metrics) on the test Redis under a fresh key prefix, removed afterwards."""
    import redis
    from django.conf import settings

    from shared.metrics import Metrics
    from shared.ratelimit import RateLimiter

    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = f"test:{uuid.uuid4().hex}:"
    yield RateLimiter(client, prefix=prefix + "rl:"), Metrics(client, prefix=prefix + "m:")
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
