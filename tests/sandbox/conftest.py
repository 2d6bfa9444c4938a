"""A loopback webhook receiver for the sandbox's callbacks, and a deadline poll helper."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

import pytest

T = TypeVar("T")


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class Receiver:
    """Queues every request it gets. POSTs are answered with the next status of `answers`
    (200 once they run out; 0 holds the request unanswered until close); GETs run Meta's
    hub.challenge check against `verify_token`."""

    def __init__(self, path: str = "/hooks?org=7") -> None:
        self.calls: queue.Queue[Call] = queue.Queue()
        self.answers: list[int] = []
        self.verify_token = "verify-me"
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> Call:
                length = int(self.headers.get("Content-Length") or 0)
                call = Call(self.command, self.path, dict(self.headers), self.rfile.read(length))
                receiver.calls.put(call)
                return call

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self._record()
                status = receiver.answers.pop(0) if receiver.answers else 200
                if status == 0:
                    receiver.release.wait(10)
                    return
                self._answer(status)

            def do_GET(self) -> None:
                self._record()
                query = dict(parse_qsl(urlsplit(self.path).query))
                ok = query.get("hub.mode") == "subscribe" and (
                    query.get("hub.verify_token") == receiver.verify_token
                )
                if ok:
                    self._answer(200, query.get("hub.challenge", "").encode())
                else:
                    self._answer(403, b"bad verify token")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 5.0) -> Call:
        return self.calls.get(timeout=timeout)

    def take(self, n: int, timeout: float = 5.0) -> list[Call]:
        """The next `n` requests, waiting at most `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        return [self.calls.get(timeout=max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def assert_quiet(self) -> None:
        assert self.calls.empty(), "unexpected extra request"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Call `fetch` until `done(result)` or the deadline; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


@pytest.fixture
def poll() -> Callable[..., object]:
    """poll(fetch, done, timeout=10): wait on an observable condition with a deadline."""
    return _poll
