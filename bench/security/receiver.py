"""The harness's own webhook receiver on 127.0.0.1: it records every event delivery it gets
(headers and body) so the sweep reads them and the events step verifies their signatures."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class EventReceiver:
    """Answers 200 to every POST; `deliveries` holds what arrived, in order."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.deliveries.append(Delivery(self.path, headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "8")
                self.end_headers()
                self.wfile.write(b"received")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def at(self, path: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == "/" + path.lstrip("/")]

    def text(self) -> str:
        return "\n".join(f"{d.path} {d.headers}\n{d.body.decode(errors='replace')}" for d in self)

    def __iter__(self):
        return iter(list(self.deliveries))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
