"""The receipt phase's webhook receiver: a loopback HTTP server that verifies every delivery with
`standardwebhooks` and records the event ids; it can go down (connections refused) and come back
on the same port."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

from devtools.procs import free_port


class EventReceiver:
    """Counts every delivery per event id; a failed verification is answered 400 and counted."""

    def __init__(self, answer_after: float = 0.0) -> None:
        # a slow receiver: records the event, then answers `answer_after` s later, so a kill -9
        # finds deliveries in flight that were already received (at-least-once duplicates)
        self.answer_after = answer_after
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/corbi"
        self.secret = ""
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()  # event id -> deliveries
        self.events: dict[str, dict] = {}  # event id -> the verified body
        self.bad_signatures = 0
        self.posts = 0
        self.outages: list[tuple[float, float | None]] = []  # (down, up)
        self.server: ThreadingHTTPServer | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.deliver(body, dict(self.headers.items()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def deliver(self, body: bytes, headers: dict[str, str]) -> int:
        headers = {k.lower(): v for k, v in headers.items()}
        try:
            event = Webhook(self.secret).verify(body, headers)
        except Exception:  # WebhookVerificationError or ValueError: counted, answered 400
            with self.lock:
                self.posts += 1
                self.bad_signatures += 1
            return 400
        if isinstance(event, bytes | str):
            event = json.loads(event)
        with self.lock:
            self.posts += 1
            self.received[event["id"]] += 1
            self.events.setdefault(event["id"], event)
        time.sleep(self.answer_after)
        return 204

    # up and down -------------------------------------------------------------------------
    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the listening socket: every connection is refused until `start`."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def go_down(self) -> None:
        self.stop()
        self.outages.append((time.time(), None))

    def come_back(self) -> None:
        self.start()
        down, _ = self.outages[-1]
        self.outages[-1] = (down, time.time())

    def downtime(self) -> float:
        return sum((up or time.time()) - down for down, up in self.outages)

    def snapshot(self) -> tuple[Counter[str], dict[str, dict]]:
        with self.lock:
            return Counter(self.received), dict(self.events)
