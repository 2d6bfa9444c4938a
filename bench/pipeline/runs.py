"""One throughput run: bare Celery or the full pipeline, its rate and the CPU it used."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.pipeline.stack import Ctx, start_workers, stop_workers
from bench.procstats import CpuSnapshot
from devtools.commands import http_session
from devtools.procs import Proc


@dataclass
class RunResult:
    """One throughput run: rate over enqueue→last done, and what the processes used meanwhile."""

    n: int
    done: int
    failed: int
    elapsed: float
    worker_cpu: float  # user+system seconds of the worker processes, enqueue → last done
    cpu: dict[str, float] = field(default_factory=dict)  # by category, same window
    host_busy: float = 0.0  # host-wide busy CPU seconds, same window
    host_total: float = 0.0
    stalled: bool = False

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed else 0.0

    def note(self) -> str:
        bits = []
        if self.failed:
            bits.append(f"{self.failed} failed")
        if self.stalled:
            bits.append(f"stalled at {self.done}/{self.n}")
        return f" ({'; '.join(bits)})" if bits else ""


def wait_done(
    count: Callable[[], int], n: int, stall: float, interval: float
) -> tuple[int, float, bool]:
    """Poll `count` until it reaches n or makes no progress for `stall` s.

    Returns (done, monotonic time of the last progress, stalled).
    """
    last, last_at = -1, time.monotonic()
    while True:
        now_count = count()
        now = time.monotonic()
        if now_count != last:
            last, last_at = now_count, now
        if now_count >= n:
            return now_count, now, False
        if now - last_at > stall:
            return now_count, last_at, True
        time.sleep(interval)


def _groups(ctx: Ctx, workers: list[Proc]) -> dict[str, list[int]]:
    groups = {"worker": [w.pid for w in workers]}
    if ctx.sandbox.process is not None:
        groups["sandbox"] = [ctx.sandbox.process.pid]
    if ctx.gunicorn_pid:
        groups["gunicorn"] = [ctx.gunicorn_pid]
    if ctx.redis_pid:  # a private redis-server (`--only edge`): counted by pid
        groups["redis"] = [ctx.redis_pid]
    groups["bench"] = [os.getpid()]  # last: its family holds all of the above
    return groups


def run_bare(ctx: Ctx, pool: str, c: int, p: int, n: int, procs: int = 1) -> RunResult:
    from bench.bare import BARE_QUEUE, DONE_KEY
    from bench.bare import app as bare_app

    ctx.fresh()
    workers = start_workers(ctx, "bare", pool, c, p, procs)
    try:
        chats = ctx.chats(n)
        groups = _groups(ctx, workers)
        before = CpuSnapshot(groups)
        started = time.monotonic()
        with bare_app.producer_or_acquire() as producer:
            for chat in chats:
                bare_app.send_task(
                    "bench.bare.send", args=[chat], producer=producer, queue=BARE_QUEUE
                )

        def count() -> int:
            return int(ctx.redis.get(DONE_KEY) or 0) + int(ctx.redis.get(DONE_KEY + ":failed") or 0)

        done, ended, stalled = wait_done(count, n, stall=20, interval=0.02)
        after = CpuSnapshot(groups)
        cpu, busy, total = after.delta(before)
        failed = int(ctx.redis.get(DONE_KEY + ":failed") or 0)
        return RunResult(
            n, done, failed, ended - started, cpu.get("worker", 0.0), cpu, busy, total, stalled
        )
    finally:
        stop_workers(workers)


def enqueue_bulk(ctx: Ctx, chats: list[int]) -> None:
    """POST /api/messages/bulk/ in chunks of 1000 (what a customer's bulk send does)."""
    session = http_session()
    for start in range(0, len(chats), 1000):
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


def last_message_id() -> int:
    from shared.models import Message

    return Message.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def finished_count(ctx: Ctx, after_id: int) -> Callable[[], int]:
    from shared.models import Message, MessageStatus

    rows = Message.objects.filter(pk__gt=after_id, organization_id=ctx.org_id)
    done = (MessageStatus.SENT, MessageStatus.FAILED)
    return lambda: rows.filter(status__in=done).count()


def failed_count(ctx: Ctx, after_id: int) -> int:
    from shared.models import Message, MessageStatus

    return Message.objects.filter(
        pk__gt=after_id, organization_id=ctx.org_id, status=MessageStatus.FAILED
    ).count()


def run_full(ctx: Ctx, pool: str, c: int, p: int, n: int, procs: int = 1) -> RunResult:
    ctx.fresh()
    workers = start_workers(ctx, "full", pool, c, p, procs)
    try:
        chats = ctx.chats(n)
        first_id = last_message_id()
        groups = _groups(ctx, workers)
        before = CpuSnapshot(groups)
        started = time.monotonic()
        enqueue_bulk(ctx, chats)
        done, ended, stalled = wait_done(finished_count(ctx, first_id), n, stall=20, interval=0.1)
        after = CpuSnapshot(groups)
        cpu, busy, total = after.delta(before)
        return RunResult(
            n,
            done,
            failed_count(ctx, first_id),
            ended - started,
            cpu.get("worker", 0.0),
            cpu,
            busy,
            total,
            stalled,
        )
    finally:
        stop_workers(workers)
