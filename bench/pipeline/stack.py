"""The pipeline benchmark's processes (on devtools.procs), its environment and its bench org."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import redis
from cryptography.fernet import Fernet

from bench.common import PG, free_port, recreate_database, wait_for
from bench.pipeline.config import (
    CHAT_BASE,
    DB_NAME,
    LOG_DIR,
    REDIS_URL,
    TELEGRAM_TOKEN,
    WHATSAPP_SID,
    WHATSAPP_TOKEN,
)
from devtools import commands
from devtools.procs import Proc, Procs, manage
from sandbox.testing import SandboxProcess

PROCS = Procs(log_dir=LOG_DIR)


def worker_cmd(app: str, pool: str, concurrency: int, prefetch: int, hostname: str) -> list[str]:
    return commands.celery_worker(
        hostname,
        *("--prefetch-multiplier", str(prefetch), *commands.ISOLATED),
        pool=pool,
        concurrency=concurrency,
        loglevel="WARNING",
        app=app,
    )


def make_env(
    sandbox_url: str, public_base_url: str, db_name: str = DB_NAME, redis_url: str = REDIS_URL
) -> dict[str, str]:
    """The stack's environment; PUBLIC_BASE_URL is the bench's gunicorn (receipt signatures
    cover it) and webhook endpoints may be plain http on 127.0.0.1 (the events section)."""
    return commands.stack_env(
        fernet_key=Fernet.generate_key().decode(),
        database_url=f"{PG}/{db_name}",
        redis_url=redis_url,
        sandbox_url=sandbox_url,
        LOG_LEVEL="WARNING",
        BENCH_TELEGRAM_TOKEN=TELEGRAM_TOKEN,
        PUBLIC_BASE_URL=public_base_url,
        WEBHOOK_ALLOW_HTTP="1",
        WEBHOOK_ALLOW_PRIVATE_TARGETS="1",
    )


@contextmanager
def gunicorn(env: dict[str, str], port: int) -> Iterator[tuple[str, int]]:
    """gunicorn on bench.settings (the product URLs plus bench/noop/): (base URL, pid)."""
    argv = commands.gunicorn(port, "--log-level", "warning")
    proc = PROCS.start("gunicorn", argv, {**env, "DJANGO_SETTINGS_MODULE": "bench.settings"})
    base = f"http://127.0.0.1:{port}"
    try:
        health = base + "/health/"
        PROCS.wait_ready(
            proc, lambda: commands.http_status(health) is not None, 30, "gunicorn", 0.2
        )
        yield base, proc.pid
    finally:
        PROCS.stop(proc, timeout=20)


def start_workers(ctx: Ctx, kind: str, pool: str, c: int, p: int, procs: int) -> list[Proc]:
    """Start `procs` worker processes (distinct --hostname) and wait until all are ready."""
    from shared.metrics import Metrics

    app, log = ("bench.bare", "bare-worker") if kind == "bare" else ("corbi", "worker")
    hosts = [f"{kind}{ctx.run}-{i}@bench" for i in range(procs)]
    workers = [
        PROCS.start(f"{log}-{i}", worker_cmd(app, pool, c, p, h), ctx.env)
        for i, h in enumerate(hosts)
    ]
    if kind == "bare":
        from bench.bare import READY_KEY

        def ready() -> bool:
            return all(ctx.redis.sismember(READY_KEY, h) for h in hosts)
    else:
        metrics = Metrics.from_url(ctx.env["REDIS_URL"])

        def ready() -> bool:
            seen = metrics.workers_seen_within(30)
            return all(h in seen for h in hosts)

    def up() -> bool:
        if any(w.poll() is not None for w in workers):
            raise RuntimeError(f"a {kind} worker exited; see var/bench/{log}-*.log")
        return ready()

    try:
        wait_for(up, 60, f"{procs} {kind} worker(s)", interval=0.05)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: list[Proc]) -> None:
    for w in workers:
        PROCS.stop(w, timeout=20)


class Ctx:
    """What every section needs: env, sandbox, Redis, the bench org and its API token."""

    def __init__(self, env: dict[str, str], sandbox: SandboxProcess, base: str) -> None:
        self.env = env
        self.sandbox = sandbox
        self.base = base
        self.redis = redis.Redis.from_url(env["REDIS_URL"])
        self.run = 0
        self.token = ""
        self.org_id = 0
        self.org = None
        self.gunicorn_pid = 0
        self.redis_pid = 0  # set when the stack runs its own redis-server

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}", "X-Org-ID": str(self.org_id)}

    def fresh(self) -> None:
        """Between runs: empty broker, limiter and metrics keys, and the sandbox's recording."""
        self.redis.flushdb()
        self.sandbox.client.clear_requests()

    def chats(self, n: int) -> list[int]:
        self.run += 1
        return [CHAT_BASE + self.run * 100_000 + i for i in range(n)]


def setup(env: dict[str, str], db_name: str = DB_NAME) -> None:
    recreate_database(db_name)
    result = manage("migrate", "--noinput", "-v", "0", env=env, timeout=180)
    if result.returncode:
        raise RuntimeError("migrate failed: " + result.stderr[-2000:])
    start_django(env)


def start_django(env: dict[str, str]) -> None:
    """django.setup() in this process on `env`."""
    os.environ.update(env)
    import django

    django.setup()
    logging.getLogger("corbi.audit").setLevel(logging.WARNING)  # keep stdout for the tables


def bench_org(ctx: Ctx) -> None:
    from django.core.management import call_command

    from shared.models import Organization
    from shared.services.integrations import integration_connect

    out = StringIO()
    call_command("create_member", org="bench", username="bench", role="admin", stdout=out)
    info = json.loads(out.getvalue())
    ctx.token, ctx.org_id = info["token"], int(info["org_id"])
    ctx.org = Organization.objects.get(pk=ctx.org_id)
    ctx.sandbox.client.add_account("telegram", token=TELEGRAM_TOKEN, bot_username="bench_bot")
    ctx.sandbox.client.configure(telegram_bot_rate=100000, telegram_chat_rate=100000)
    integration_connect(
        organization=ctx.org,
        provider="telegram",
        token=TELEGRAM_TOKEN,
        extra={"rate_limit_per_second": 10000},
    )
    # WhatsApp for the enqueue comparison of plain and templated messages (nothing is sent).
    integration_connect(
        organization=ctx.org,
        provider="whatsapp",
        token=WHATSAPP_TOKEN,
        extra={"account_sid": WHATSAPP_SID, "from_whatsapp": "+14155238886"},
    )


def private_redis(directory: Path) -> tuple[str, Proc]:
    """A redis-server of our own on a free port (no persistence): (base URL, its process)."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    proc = PROCS.start("redis", commands.redis_server(port, directory))
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    PROCS.wait_ready(proc, up, 20, "redis-server", 0.05)
    return f"redis://127.0.0.1:{port}", proc
