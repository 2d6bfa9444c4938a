"""Delivery pipeline benchmark: bare Celery vs the full pipeline, API enqueue, rate-limit accuracy.

    .venv/bin/python -m bench.pipeline [--messages N] [--quick]

Starts (and always stops) its own sandbox (--latency-ms 100), gunicorn, Celery workers, a
dedicated Postgres database (corbi_bench, dropped and recreated) and Redis db 13 (flushed).
Prints Markdown tables of ratios and rates and writes them to bench/RESULTS.md. It asserts
nothing about wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import psycopg
import redis
import requests
from cryptography.fernet import Fernet

from sandbox.testing import SandboxProcess

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "corbi_bench"
PG = "postgres://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/13"
LATENCY_MS = 100
TELEGRAM_TOKEN = "7000001:benchBENCHbench_token_0123456789abcdef"
CHAT_BASE = 1_000_000  # far from the sandbox's magic chat ids

_procs: list[subprocess.Popen] = []
_log_dir = ROOT / "var" / "bench"


# --- processes -------------------------------------------------------------------------------


def spawn(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    _log_dir.mkdir(parents=True, exist_ok=True)
    log = (_log_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    _procs.append(proc)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group of a child we started (by its pid), SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    if proc in _procs:
        _procs.remove(proc)


def stop_all() -> None:
    for proc in list(_procs):
        stop(proc, timeout=10)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def worker_cmd(app: str, pool: str, concurrency: int, prefetch: int, hostname: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        str(prefetch),
        "--hostname",
        hostname,
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "WARNING",
    ]


# --- environment -----------------------------------------------------------------------------


def recreate_database() -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def make_env(sandbox_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "corbi.settings",
            "CORBI_DOTENV": "0",
            "FERNET_KEY": Fernet.generate_key().decode(),
            "DATABASE_URL": f"{PG}/{DB_NAME}",
            "REDIS_URL": REDIS_URL,
            "PROVIDER_SANDBOX_URL": sandbox_url,
            "LOG_LEVEL": "WARNING",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "BENCH_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
        }
    )
    return env


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


@contextmanager
def gunicorn(env: dict[str, str], port: int) -> Iterator[str]:
    proc = spawn(
        "gunicorn",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "corbi.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "2",
            "--threads",
            "4",
            "--log-level",
            "warning",
        ],
        {**env, "DJANGO_SETTINGS_MODULE": "bench.settings"},
    )
    base = f"http://127.0.0.1:{port}"
    session = http()

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited; see var/bench/gunicorn.log")
        try:
            session.get(base + "/health/", timeout=2)
            return True
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 30, "gunicorn", interval=0.2)
        yield base
    finally:
        stop(proc)


# --- (a) + (b) throughput --------------------------------------------------------------------


class Ctx:
    """What every section needs: env, sandbox, Redis, the bench org and its API token."""

    def __init__(self, env: dict[str, str], sandbox: SandboxProcess, base: str) -> None:
        self.env = env
        self.sandbox = sandbox
        self.base = base
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.run = 0
        self.token = ""
        self.org_id = 0
        self.org = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}", "X-Org-ID": str(self.org_id)}

    def fresh(self) -> None:
        """Between runs: empty broker, limiter and metrics keys, and the sandbox's recording."""
        self.redis.flushdb()
        self.sandbox.client.clear_requests()

    def chats(self, n: int) -> list[int]:
        self.run += 1
        return [CHAT_BASE + self.run * 100_000 + i for i in range(n)]


def run_bare(ctx: Ctx, pool: str, c: int, p: int, n: int) -> float:
    from bench.bare import BARE_QUEUE, DONE_KEY, READY_KEY
    from bench.bare import app as bare_app

    ctx.fresh()
    host = f"bare{ctx.run}@bench"
    proc = spawn("bare-worker", worker_cmd("bench.bare", pool, c, p, host), ctx.env)
    try:
        wait_for(lambda: ctx.redis.sismember(READY_KEY, host) or proc.poll() is not None, 60, host)
        if proc.poll() is not None:
            raise RuntimeError("bare worker exited; see var/bench/bare-worker.log")
        chats = ctx.chats(n)
        started = time.monotonic()
        with bare_app.producer_or_acquire() as producer:
            for chat in chats:
                bare_app.send_task(
                    "bench.bare.send", args=[chat], producer=producer, queue=BARE_QUEUE
                )
        wait_for(
            lambda: (
                int(ctx.redis.get(DONE_KEY) or 0) + int(ctx.redis.get(DONE_KEY + ":failed") or 0)
                >= n
            ),
            max(60, n / 5),
            f"{n} bare sends",
            interval=0.02,
        )
        elapsed = time.monotonic() - started
        failed = int(ctx.redis.get(DONE_KEY + ":failed") or 0)
        if failed:
            print(f"  warning: {failed} bare sends failed", file=sys.stderr)
        return n / elapsed
    finally:
        stop(proc)


def run_full(ctx: Ctx, pool: str, c: int, p: int, n: int) -> tuple[float, int]:
    from shared.metrics import Metrics
    from shared.models import Message, MessageStatus

    ctx.fresh()
    host = f"full{ctx.run}@bench"
    proc = spawn("worker", worker_cmd("corbi", pool, c, p, host), ctx.env)
    metrics = Metrics.from_url(REDIS_URL)
    try:
        wait_for(
            lambda: host in metrics.workers_seen_within(30) or proc.poll() is not None, 60, host
        )
        if proc.poll() is not None:
            raise RuntimeError("worker exited; see var/bench/worker.log")
        chats = ctx.chats(n)
        first_id = (Message.objects.order_by("-pk").values_list("pk", flat=True).first()) or 0
        session = http()
        started = time.monotonic()
        for start in range(0, n, 1000):
            body = {
                "messages": [
                    {"provider": "telegram", "to": str(chat), "body": "bench"}
                    for chat in chats[start : start + 1000]
                ]
            }
            r = session.post(
                ctx.base + "/api/messages/bulk/", json=body, headers=ctx.headers(), timeout=60
            )
            if r.status_code != 202:
                raise RuntimeError(f"bulk enqueue -> {r.status_code}: {r.text[:300]}")
        rows = Message.objects.filter(pk__gt=first_id, organization_id=ctx.org_id)
        done = (MessageStatus.SENT, MessageStatus.FAILED)
        wait_for(
            lambda: rows.filter(status__in=done).count() >= n,
            max(90, n / 3),
            f"{n} messages sent",
            interval=0.1,
        )
        elapsed = time.monotonic() - started
        failed = rows.filter(status=MessageStatus.FAILED).count()
        return n / elapsed, failed
    finally:
        stop(proc)


def section_throughput(ctx: Ctx, n: int, quick: bool) -> str:
    grid = [("threads", 64, 4), ("prefork", 2, 4)]
    if not quick:
        grid = [
            ("threads", 32, 1),
            ("threads", 32, 4),
            ("threads", 64, 1),
            ("threads", 64, 4),
            ("threads", 128, 1),
            ("threads", 128, 4),
            ("prefork", 2, 4),
        ]
    rows = [
        "| pool | concurrency | prefetch | N | (a) bare msg/s | (b) pipeline msg/s | (b)/(a) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for pool, c, p in grid:
        count = n if pool == "threads" else max(40, n // 10)
        bare = run_bare(ctx, pool, c, p, count)
        full, failed = run_full(ctx, pool, c, p, count)
        note = f" ({failed} failed)" if failed else ""
        row = (
            f"| {pool} | {c} | {p} | {count} | {bare:.0f} | {full:.0f}{note} | {full / bare:.2f} |"
        )
        print(row, flush=True)
        rows.append(row)
    return "\n".join(rows)


# --- (c) API enqueue -------------------------------------------------------------------------


def load(
    url: str, headers: dict[str, str], bodies: list[dict], clients: int
) -> tuple[float, list[float], int]:
    """POST every body with `clients` threads; (requests/s, latencies in s, non-2xx count)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    chunks = [bodies[i::clients] for i in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def client(mine: list[dict]) -> None:
        session = http()
        local: list[float] = []
        bad = 0
        barrier.wait()
        for body in mine:
            t0 = time.perf_counter()
            r = session.post(url, json=body, headers=headers, timeout=60)
            local.append(time.perf_counter() - t0)
            bad += r.status_code >= 300
        with lock:
            latencies.extend(local)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return len(bodies) / (time.perf_counter() - started), latencies, errors[0]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def section_api(ctx: Ctx, requests_total: int, bulk_requests: int, clients: int = 16) -> str:
    ctx.fresh()  # no worker runs here: pure enqueue
    chats = ctx.chats(requests_total + bulk_requests * 1000)
    single = [{"provider": "telegram", "to": str(c), "body": "bench"} for c in chats]
    rows = [
        "| endpoint | clients | requests | req/s | msg/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    results = {}
    for name, path, bodies in (
        ("POST /bench/noop/ (auth+org, 202)", "/bench/noop/", single[:requests_total]),
        ("POST /api/messages/", "/api/messages/", single[:requests_total]),
    ):
        load(ctx.base + path, ctx.headers(), bodies[: clients * 2], clients)  # warm-up
        rate, lat, bad = load(ctx.base + path, ctx.headers(), bodies, clients)
        results[path] = rate
        rows.append(
            f"| {name} | {clients} | {len(bodies)} | {rate:.0f} | {rate:.0f} | "
            f"{pct(lat, 0.5):.1f} | {pct(lat, 0.99):.1f} | {bad} |"
        )
    rest = single[requests_total:]
    bulk = [{"messages": rest[i * 1000 : (i + 1) * 1000]} for i in range(bulk_requests)]
    rate, lat, bad = load(ctx.base + "/api/messages/bulk/", ctx.headers(), bulk, 2)
    rows.append(
        f"| POST /api/messages/bulk/ (1000/request) | 2 | {len(bulk)} | {rate:.1f} | "
        f"{rate * 1000:.0f} | {pct(lat, 0.5):.1f} | {pct(lat, 0.99):.1f} | {bad} |"
    )
    ratio = results["/api/messages/"] / results["/bench/noop/"]
    rows.append("")
    rows.append(f"Single-message enqueue / no-op baseline: **{ratio:.2f}**")
    ctx.fresh()
    return "\n".join(rows)


# --- (d) rate-limit accuracy -----------------------------------------------------------------


def section_rate_limits(ctx: Ctx, seconds: float, rates=(5, 20, 50)) -> str:
    from django.core.management import call_command

    from shared.metrics import Metrics
    from shared.models import Message, MessageStatus, Organization
    from shared.services.integrations import integration_connect
    from shared.services.messages import message_create_bulk

    ctx.fresh()
    orgs = []
    for rate in rates:
        ig_id = f"17841400000{rate:05d}"
        token = f"IGAAbench{rate:05d}" + "x" * 40
        ctx.sandbox.client.add_account(
            "instagram", access_token=token, ig_id=ig_id, username=f"b{rate}", rate_per_second=rate
        )
        out = StringIO()
        call_command(
            "create_member", org=f"rl-{rate}", username=f"rl{rate}", role="admin", stdout=out
        )
        org = Organization.objects.get(pk=json.loads(out.getvalue())["org_id"])
        integration_connect(
            organization=org,
            provider="instagram",
            token=token,
            extra={"instagram_scoped_id": ig_id, "rate_limit_per_second": rate},
        )
        orgs.append((rate, org, ig_id))

    host = f"rl{ctx.run}@bench"
    proc = spawn("worker-rl", worker_cmd("corbi", "threads", 64, 4, host), ctx.env)
    metrics = Metrics.from_url(REDIS_URL)
    try:
        wait_for(
            lambda: host in metrics.workers_seen_within(30) or proc.poll() is not None, 60, host
        )
        ids = []
        for rate, org, _ in orgs:
            count = int(2 * rate * seconds)
            items = [
                {"provider": "instagram", "to": str(20_000_000 + rate * 100_000 + i), "body": "rl"}
                for i in range(count)
            ]
            for start in range(0, count, 1000):
                ids += [
                    m.pk
                    for m, _ in message_create_bulk(
                        organization=org, items=items[start : start + 1000]
                    )
                ]
        rows_q = Message.objects.filter(pk__in=ids)
        done = (MessageStatus.SENT, MessageStatus.FAILED)
        try:
            wait_for(
                lambda: rows_q.filter(status__in=done).count() >= len(ids),
                2 * seconds + 60,
                "rate-limited messages",
                interval=0.2,
            )
        except RuntimeError as exc:
            print(f"  warning: {exc}; measuring what was sent", file=sys.stderr)
    finally:
        stop(proc)

    recorded = ctx.sandbox.client.requests("instagram")
    rows = [
        "| configured msg/s | messages | measured msg/s (steady state) | error % | provider 429s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for rate, _, ig_id in orgs:
        mine = [r for r in recorded if f"/{ig_id}/messages" in r["path"]]
        ok = sorted(r["time"] for r in mine if r["status"] == 200)
        throttled = sum(1 for r in mine if r["outcome"] == "rate_limited")
        lo, hi = ok[0] + 1.0, ok[-1] - 1.0
        window = [t for t in ok if lo <= t <= hi]
        measured = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 2 else 0.0
        error = (measured - rate) / rate * 100
        rows.append(f"| {rate} | {len(ok)} | {measured:.2f} | {error:+.1f} | {throttled} |")
    return "\n".join(rows)


# --- evidence: queries per delivery ----------------------------------------------------------


def section_queries(ctx: Ctx) -> str:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from shared.metrics import Metrics
    from shared.models import Integration, Organization
    from shared.ratelimit import RateLimiter
    from shared.services.messages import message_create, message_deliver
    from shared.services.providers import integration_adapter

    ctx.fresh()
    org = Organization.objects.get(pk=ctx.org_id)
    r = redis.Redis.from_url(REDIS_URL)
    lines = ["| step | SQL queries | wall ms |", "|---|---:|---:|"]
    for label in ("first delivery in a process", "steady-state delivery"):
        (chat,) = ctx.chats(1)
        message, _ = message_create(organization=org, provider="telegram", to=str(chat), body="q")
        with CaptureQueriesContext(connection) as captured:
            t0 = time.perf_counter()
            outcome = message_deliver(
                message_id=message.pk, limiter=RateLimiter(r), metrics=Metrics.from_url(REDIS_URL)
            )
            wall = (time.perf_counter() - t0) * 1000
        assert outcome.status == "sent", outcome
        lines.append(f"| {label} | {len(captured)} | {wall:.0f} |")
    kinds: dict[str, int] = {}
    for q in captured.captured_queries:
        match = re.search(
            r'(SELECT|INSERT|UPDATE|DELETE).*?(?:FROM|INTO|UPDATE)\s+"(\w+)"', q["sql"]
        )
        key = f"{match.group(1)} {match.group(2)}" if match else q["sql"][:30]
        kinds[key] = kinds.get(key, 0) + 1
    lines.append("")
    lines.append(
        "Steady-state queries by kind: "
        + ", ".join(f"`{k}` x{v}" for k, v in sorted(kinds.items()))
        + f" (wall time includes the {LATENCY_MS} ms sandbox latency)."
    )
    # CPU spent by the delivering thread per message, and by the per-task adapter build
    # (Fernet decrypt + a new requests.Session, hence a new TCP connection per send).
    integration = Integration.objects.get(organization=org, provider="telegram")
    reps = 20
    cpu = 0.0
    for chat in ctx.chats(reps):
        message, _ = message_create(organization=org, provider="telegram", to=str(chat), body="q")
        t0 = time.thread_time()
        message_deliver(
            message_id=message.pk, limiter=RateLimiter(r), metrics=Metrics.from_url(REDIS_URL)
        )
        cpu += time.thread_time() - t0
    t0 = time.thread_time()
    for _ in range(200):
        integration_adapter(integration)
    adapter_ms = (time.thread_time() - t0) / 200 * 1000
    lines.append("")
    lines.append(
        f"CPU per delivery in the delivering thread: **{cpu / reps * 1000:.1f} ms** "
        f"(of which building the adapter — decrypt + new `requests.Session` — "
        f"{adapter_ms:.2f} ms). At 2 cores this alone caps one host at "
        f"~{2 / (cpu / reps):.0f} msg/s before Celery, Redis and Postgres CPU."
    )
    ctx.fresh()
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def setup(env: dict[str, str]) -> None:
    recreate_database()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=180,
    )
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=None, help="N per threads run (1000)")
    parser.add_argument("--quick", action="store_true", help="tiny N, two grid rows")
    args = parser.parse_args(argv)
    n = args.messages or (200 if args.quick else 1000)
    api_requests = 300 if args.quick else 2000
    bulk_requests = 3 if args.quick else 10
    rl_seconds = 4.0 if args.quick else 10.0

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    began = time.monotonic()
    sections: list[tuple[str, str]] = []
    try:
        with SandboxProcess(latency_ms=LATENCY_MS) as sandbox:
            env = make_env(sandbox.url)
            setup(env)
            with gunicorn(env, free_port()) as base:
                ctx = Ctx(env, sandbox, base)
                ctx.redis.flushdb()
                bench_org(ctx)
                print("## (c) API enqueue (worker stopped)", flush=True)
                sections.append(
                    (
                        "(c) API enqueue (worker stopped)",
                        section_api(ctx, api_requests, bulk_requests),
                    )
                )
                print(sections[-1][1], flush=True)
                print("## (a)/(b) Bare Celery vs full pipeline", flush=True)
                sections.append(
                    (
                        f"(a)/(b) Bare Celery vs full pipeline (sandbox latency {LATENCY_MS} ms)",
                        section_throughput(ctx, n, args.quick),
                    )
                )
                sections.append(("Per-delivery work (in-process, evidence)", section_queries(ctx)))
                print(sections[-1][1], flush=True)
                sections.append(
                    (
                        f"(d) Rate-limit accuracy (instagram, 2x demand for {rl_seconds:.0f} s)",
                        section_rate_limits(ctx, rl_seconds),
                    )
                )
                print(sections[-1][1], flush=True)
    finally:
        stop_all()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # best effort on the way out
            pass
    runtime = time.monotonic() - began
    write_results(sections, argv if argv is not None else sys.argv[1:], runtime)
    return 0


def write_results(sections: list[tuple[str, str]], argv: list[str], runtime: float) -> None:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    text = [
        "# Delivery pipeline benchmark",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- `uname -a`: `{uname}`",
        f"- nproc: {os.cpu_count()}; Python {platform.python_version()}",
        f"- command: `{' '.join(['.venv/bin/python -m bench.pipeline', *argv])}`",
        f"- run time: {runtime:.0f} s; sandbox `--latency-ms {LATENCY_MS}`; Postgres db "
        f"`{DB_NAME}`, Redis db 13; gunicorn `-w 2 --threads 4`",
        "",
        "Ratios compare runs on the same machine in the same invocation; absolute figures depend "
        "on the host.",
        "",
    ]
    for title, body in sections:
        text += [f"## {title}", "", body, ""]
    out = ROOT / "bench" / "RESULTS.md"
    out.write_text("\n".join(text))
    print("\n".join(text))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
