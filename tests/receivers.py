"""Fixtures for events out (a plugin of tests/conftest.py): local webhook receivers, the broker
queue, endpoints and events."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from django.conf import settings as django_settings

from shared.crypto import encrypt_token
from shared.events.models import WebhookEndpoint
from shared.events.signing import new_secret

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A tiny HTTP server on 127.0.0.1 that records every request and answers `reply(n)`."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    reply: Callable[[int], Reply] = lambda n: (200, {}, b"ok")

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b""):
        self.reply = lambda n: (status, headers or {}, body)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.requests.append(Received(self.path, headers, body))
            status, extra, payload = receiver.reply(len(receiver.requests))
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def make_receiver():
    """make_receiver() → a started Receiver; all are shut down after the test."""
    started: list[Receiver] = []

    def make() -> Receiver:
        receiver = Receiver(server=None)  # type: ignore[arg-type]
        receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
        threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def receiver(make_receiver) -> Receiver:
    return make_receiver()


@pytest.fixture
def event_queue():
    """The broker's queue (CELERY_BROKER_URL, whatever Redis db it is), emptied around the test;
    `.tasks()` lists (task name, args) of what was published."""

    class Queue:
        def __init__(self) -> None:
            self.client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)

        def tasks(self) -> list[tuple[str, list]]:
            found = []
            for raw in self.client.lrange("corbi", 0, -1):
                message = json.loads(raw)
                args = json.loads(base64.b64decode(message["body"]))[0]
                found.append((message["headers"]["task"], args))
            return found

        def clear(self) -> None:
            self.client.delete("corbi")

    queue = Queue()
    queue.clear()
    yield queue
    queue.clear()


def make_endpoint(org, url: str, events: list[str] | None = None) -> tuple[WebhookEndpoint, str]:
    """An endpoint stored directly (no SSRF check): (endpoint, its plaintext secret)."""
    secret = new_secret()
    endpoint = WebhookEndpoint.objects.create(
        organization=org, url=url, events=events or [], secret_encrypted=encrypt_token(secret)
    )
    return endpoint, secret


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.02):
    """Poll `predicate` until it is truthy (its value) or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met before the deadline")


@pytest.fixture
def dead_broker():
    """The Celery app publishes to a port where nothing listens; call the yielded `revive()`
    (or let the test end) to publish to the real broker again."""
    from corbi.celery import app

    def point_at(url: str | None) -> None:
        app._pool = None
        app.amqp._producer_pool = None
        if url is None:  # back to what the Django settings say (other tests change those)
            app.conf.changes.pop("broker_url", None)
        else:
            app.conf.broker_url = url

    point_at("redis://127.0.0.1:1/0")
    yield lambda: point_at(None)
    point_at(None)
