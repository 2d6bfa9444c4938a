"""CLI: python -m sandbox --port 8025 [--host 127.0.0.1] [--latency-ms N] [--accounts FILE]."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from sandbox.accounts import AccountError
from sandbox.app import build_app
from sandbox.state import DEFAULT_CONFIG


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m sandbox", description="Local simulator of the five provider APIs."
    )
    p.add_argument("--port", type=int, default=8025, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    p.add_argument("--latency-ms", type=float, default=0, help="added to every provider call")
    p.add_argument("--accounts", metavar="FILE.json", help="accounts to preload (JSON list)")
    p.add_argument(
        "--telegram-bot-rate",
        type=float,
        default=DEFAULT_CONFIG["telegram_bot_rate"],
        help="messages/second per bot",
    )
    p.add_argument(
        "--telegram-chat-rate",
        type=float,
        default=DEFAULT_CONFIG["telegram_chat_rate"],
        help="messages/second per chat",
    )
    p.add_argument(
        "--telegram-group-per-minute",
        type=float,
        default=DEFAULT_CONFIG["telegram_group_per_minute"],
        help="messages/minute per group chat (negative chat_id)",
    )
    p.add_argument(
        "--google-rate-limit-status",
        type=int,
        choices=(403, 429),
        default=DEFAULT_CONFIG["google_rate_limit_status"],
    )
    p.add_argument(
        "--sendgrid-signing-key",
        metavar="KEY.pem",
        help="P-256 private key (PEM) that signs Event Webhook batches; default: a new one",
    )
    return p.parse_args(argv)


def _load_accounts(path: str | None) -> list[Any]:
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, list) else [data]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> None:
    config = {
        "latency_ms": args.latency_ms,
        "telegram_bot_rate": args.telegram_bot_rate,
        "telegram_chat_rate": args.telegram_chat_rate,
        "telegram_group_per_minute": args.telegram_group_per_minute,
        "google_rate_limit_status": args.google_rate_limit_status,
    }
    app = build_app(config, _load_accounts(args.accounts), args.sendgrid_signing_key)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    sock = _bind(args.host, args.port)
    site = web.SockSite(runner, sock, backlog=2048)
    await site.start()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"sandbox listening on http://{shown}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except (AccountError, OSError, ValueError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
