"""A fast webhook receiver for the events section: answers every request 200 at once.

    .venv/bin/python -m bench.pipeline.receiver PORT

Binds 127.0.0.1:PORT, one thread per connection, HTTP/1.1 keep-alive; reads the body and
answers `200 ok` without checking anything (the bench measures the sender, not the receiver).
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: a burst of new connections is not refused


def main(argv: list[str]) -> int:
    server = Server(("127.0.0.1", int(argv[0])), Handler)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
