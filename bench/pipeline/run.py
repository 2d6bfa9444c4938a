"""`python -m bench.pipeline`: parse the flags, start the stack, run every section, write RESULTS.md."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable

import bench.pipeline
from bench.common import PG, free_port
from bench.pipeline.api import section_api
from bench.pipeline.config import (
    DB_NAME,
    EDGE_DB_NAME,
    EDGE_REDIS_DB,
    LATENCY_MS,
    LOG_DIR,
    REDIS_URL,
    SCHED_DB_NAME,
    SCHED_REDIS_URL,
)
from bench.pipeline.edge import EdgeSizes, section_edge
from bench.pipeline.events import section_events
from bench.pipeline.eventsql import section_sql
from bench.pipeline.inprocess import section_queries
from bench.pipeline.memory import section_memory
from bench.pipeline.ratelimits import section_rate_limits
from bench.pipeline.receipts import section_receipts
from bench.pipeline.report import write_results
from bench.pipeline.scheduled import section_scheduled
from bench.pipeline.stack import (
    PROCS,
    Ctx,
    bench_org,
    gunicorn,
    make_env,
    private_redis,
    setup,
    start_django,
)
from bench.pipeline.throughput import (
    section_batch_sizes,
    section_cpu,
    section_scaling,
    section_throughput,
)
from sandbox.testing import SandboxProcess


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = bench.pipeline.__doc__ or ""
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline", description=doc.splitlines()[0]
    )
    parser.add_argument(
        "--messages", type=int, default=None, help="N per threads and scaling run (600)"
    )
    parser.add_argument(
        "--memory-messages",
        type=int,
        default=None,
        help="messages after the first 1000 in the memory section (10000)",
    )
    parser.add_argument(
        "--memory-procs", type=int, default=1, help="worker processes in the memory section (1)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny N, two grid rows")
    parser.add_argument(
        "--edge-messages", type=int, default=None, help="N per run of the edge section (3000)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections to run (api,throughput,batch,scaling,queries,memory,"
        "ratelimits,events,receipts,edge,sched); default all. `edge` alone runs on its own "
        "database and Redis db. Replaces only those sections in RESULTS.md",
    )
    return parser.parse_args(argv)


class Sizes:
    """How much each section does: small with --quick."""

    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.n = args.messages or (200 if quick else 600)
        self.api_requests = 300 if quick else 2000
        self.bulk_requests = 4 if quick else 20
        self.rl_seconds = 4.0 if quick else 10.0
        self.mem_first = 200 if quick else 1000
        self.mem_more = args.memory_messages or (1000 if quick else 10_000)
        self.inprocess_n = 100 if quick else 500
        self.scale_procs = (1, 2) if quick else (1, 2, 4)
        self.batch_sizes = (1, 25) if quick else (1, 5, 25, 100)
        self.event_reps = 1 if quick else 3
        self.receipts = 300 if quick else 2000
        self.sendgrid_batches = 6 if quick else 40
        self.sched_backlogs = (0, 1_000, 10_000) if quick else (0, 10_000, 100_000)
        self.sched_repeat = 5 if quick else 15


# Sections that need no stack: run alone, they start no sandbox, gunicorn or worker.
STACKLESS = frozenset({"sched"})


def selected(args: argparse.Namespace) -> set[str]:
    return {name.strip() for name in args.only.split(",") if name.strip()}


SCHED_TITLE = "Scheduled-send sweep: time per sweep as the future backlog grows"


def run_sections(ctx: Ctx, args: argparse.Namespace, add: Callable[[str, str], None]) -> None:
    s = Sizes(args)
    only = selected(args)

    def want(name: str) -> bool:
        return not only or name in only

    if want("api"):
        add("(c) API enqueue (worker stopped)", section_api(ctx, s.api_requests, s.bulk_requests))
    if want("throughput"):
        add(
            f"(a)/(b) Bare Celery vs full pipeline (sandbox latency {LATENCY_MS} ms)",
            section_throughput(ctx, s.n, args.quick),
        )
    if want("batch"):
        add(
            "DELIVERY_BATCH_SIZE (ids per delivery task)",
            section_batch_sizes(ctx, s.n, s.batch_sizes),
        )
    if want("scaling"):
        scaling, one = section_scaling(ctx, s.n, s.scale_procs)
        add(f"Scaling (worker processes, sandbox latency {LATENCY_MS} ms)", scaling)
        add("CPU per delivered message", section_cpu(ctx, one, s.inprocess_n))
    if want("queries"):
        add("Per-delivery work (in-process, evidence)", section_queries(ctx))
    if want("memory"):
        add(
            f"Memory (worker RSS over {s.mem_first + s.mem_more:,} deliveries)",
            section_memory(ctx, s.mem_first, s.mem_more, args.memory_procs),
        )
    if want("ratelimits"):
        add(
            f"(d) Rate-limit accuracy (instagram, 2x demand for {s.rl_seconds:.0f} s)",
            section_rate_limits(ctx, s.rl_seconds),
        )
    if want("events") or want("receipts"):
        run_events_and_receipts(ctx, s, add)
    if want("edge"):
        section_edge(ctx, EdgeSizes(args.quick, args.edge_messages), add)
    if want("sched"):  # last: it points this process at its own database for a while
        ctx.fresh()
        add(
            SCHED_TITLE,
            section_scheduled(ctx.env, ctx.redis, s.sched_backlogs, s.sched_repeat),
        )


def run_stackless(args: argparse.Namespace, add: Callable[[str, str], None]) -> None:
    """The STACKLESS sections alone: Django in this process on their own database and broker
    db, with no sandbox (its URL points nowhere), gunicorn or worker."""
    import redis

    s = Sizes(args)
    nowhere = "http://127.0.0.1:9"
    env = {
        **make_env(nowhere, nowhere),
        "DATABASE_URL": f"{PG}/{SCHED_DB_NAME}",
        "REDIS_URL": SCHED_REDIS_URL,
    }
    start_django(env)
    broker = redis.Redis.from_url(SCHED_REDIS_URL)
    add(SCHED_TITLE, section_scheduled(env, broker, s.sched_backlogs, s.sched_repeat))


def run_events_and_receipts(ctx: Ctx, s: Sizes, add: Callable[[str, str], None]) -> None:
    """Events out (which measures the send rate without an endpoint), then receipts in next to
    it, then the SQL the events code adds."""
    body, receiver, send_rate = section_events(ctx, s.n, s.event_reps)
    try:
        add(f"(e) Events out: deliveries/s and the send rate with an endpoint (N {s.n})", body)
        body, receipts = section_receipts(ctx, s.receipts, s.sendgrid_batches, send_rate)
        add("(f) Receipts in: signed provider receipts through gunicorn", body)
        add(
            "(e)/(f) SQL the events code adds (in-process, evidence)",
            section_sql(ctx, receipts, receiver.url),
        )
    finally:
        receiver.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    began = time.monotonic()
    sections: list[tuple[str, str]] = []

    def add(title: str, body: str) -> None:
        sections.append((title, body))
        print(f"## {title}\n\n{body}\n", flush=True)
        print(f"[{time.monotonic() - began:.0f} s]", flush=True)

    try:
        if args.only and selected(args) <= STACKLESS:
            run_stackless(args, add)
            return finish(args, argv, began, sections)
        # `--only edge` alone: a database and a redis-server of its own (config.EDGE_DB_NAME).
        own = selected(args) == {"edge"}
        db_name, redis_url, redis_pid = DB_NAME, REDIS_URL, 0
        if own:
            base_url, redis_proc = private_redis(LOG_DIR / "edge-redis")
            db_name, redis_url = EDGE_DB_NAME, f"{base_url}/{EDGE_REDIS_DB}"
            redis_pid = redis_proc.pid
        with SandboxProcess(latency_ms=LATENCY_MS) as sandbox:
            port = free_port()
            env = make_env(sandbox.url, f"http://127.0.0.1:{port}", db_name, redis_url)
            setup(env, db_name)
            with gunicorn(env, port) as (base, gunicorn_pid):
                ctx = Ctx(env, sandbox, base)
                ctx.gunicorn_pid = gunicorn_pid
                ctx.redis_pid = redis_pid
                ctx.redis.flushdb()
                bench_org(ctx)
                run_sections(ctx, args, add)
    finally:
        PROCS.stop_all(timeout=10)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # best effort on the way out
            pass
    return finish(args, argv, began, sections)


def finish(
    args: argparse.Namespace, argv: list[str] | None, began: float, sections: list[tuple[str, str]]
) -> int:
    runtime = time.monotonic() - began
    write_results(sections, argv if argv is not None else sys.argv[1:], runtime, bool(args.only))
    return 0
