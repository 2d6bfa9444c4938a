"""Events out: deliveries/s to a fast local receiver through a real worker, and the send rate
with no webhook endpoint vs one endpoint subscribed to `message.sent`, in the same run."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from bench.common import free_port
from bench.pipeline.config import LATENCY_MS, SCALE_POOL
from bench.pipeline.runs import (
    RunResult,
    enqueue_bulk,
    failed_count,
    finished_count,
    last_message_id,
    run_bare,
    wait_done,
)
from bench.pipeline.stack import PROCS, Ctx, start_workers, stop_workers
from bench.procstats import CpuSnapshot
from devtools import commands
from devtools.commands import http_session


@dataclass
class SendRun:
    """One pipeline run of n messages; with an endpoint, also its n `message.sent` deliveries."""

    n: int
    sent: int
    send_elapsed: float
    worker_ms: float  # worker CPU ms per message, enqueue → last send (and last delivery)
    delivered: int = 0
    deliver_elapsed: float = 0.0  # enqueue → last delivery
    failed: int = 0

    @property
    def send_rate(self) -> float:
        return self.sent / self.send_elapsed if self.send_elapsed else 0.0

    @property
    def deliver_rate(self) -> float:
        return self.delivered / self.deliver_elapsed if self.deliver_elapsed else 0.0

    def note(self) -> str:
        bits = [f"{self.failed} failed"] if self.failed else []
        if self.sent < self.n:
            bits.append(f"sent {self.sent}/{self.n}")
        if self.deliver_elapsed and self.delivered < self.n:
            bits.append(f"delivered {self.delivered}/{self.n}")
        return f" ({'; '.join(bits)})" if bits else ""


class Receiver:
    """bench.pipeline.receiver on a free port, and the org's endpoint pointing at it."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/hook"
        argv = commands.python("-m", "bench.pipeline.receiver", str(port))
        self.proc = PROCS.start("receiver", argv, ctx.env)
        health = f"http://127.0.0.1:{port}/"
        PROCS.wait_ready(self.proc, lambda: commands.http_status(health) == 200, 15, "receiver")

    def create(self, events: list[str]) -> int:
        """POST /api/webhook-endpoints/ (the SSRF check allows 127.0.0.1 by the bench env)."""
        r = http_session().post(
            self.ctx.base + "/api/webhook-endpoints/",
            json={"url": self.url, "events": events, "description": "bench"},
            headers=self.ctx.headers(),
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError(f"endpoint create -> {r.status_code}: {r.text[:300]}")
        return int(r.json()["endpoint"]["id"])

    def delete(self, endpoint_id: int) -> None:
        r = http_session().delete(
            f"{self.ctx.base}/api/webhook-endpoints/{endpoint_id}/",
            headers=self.ctx.headers(),
            timeout=30,
        )
        if r.status_code not in (200, 204):
            raise RuntimeError(f"endpoint delete -> {r.status_code}: {r.text[:300]}")

    def stop(self) -> None:
        PROCS.stop(self.proc, timeout=10)


def last_delivery_id() -> int:
    from shared.events.models import EventDelivery

    return EventDelivery.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def delivered_count(after_id: int):
    from shared.events.models import DeliveryStatus, EventDelivery

    rows = EventDelivery.objects.filter(pk__gt=after_id, status=DeliveryStatus.DELIVERED)
    return rows.count


def send_run(ctx: Ctx, n: int, receiver: Receiver | None) -> SendRun:
    """The full pipeline (1 worker process, SCALE_POOL) sending n messages; with `receiver`,
    an endpoint subscribed to message.sent exists and its deliveries are waited for too."""
    pool, c, p = SCALE_POOL
    ctx.fresh()
    endpoint_id = receiver.create(["message.sent"]) if receiver else None
    workers = start_workers(ctx, "full", pool, c, p, 1)
    try:
        chats = ctx.chats(n)
        first_id, first_delivery = last_message_id(), last_delivery_id()
        groups = {"worker": [w.pid for w in workers]}
        before = CpuSnapshot(groups)
        started = time.monotonic()
        enqueue_bulk(ctx, chats)
        sent, sent_at, _ = wait_done(finished_count(ctx, first_id), n, stall=20, interval=0.1)
        run = SendRun(n, sent, sent_at - started, 0.0, failed=failed_count(ctx, first_id))
        if receiver:
            count = delivered_count(first_delivery)
            run.delivered, done_at, _ = wait_done(count, n, stall=20, interval=0.1)
            run.deliver_elapsed = done_at - started
        cpu, _, _ = CpuSnapshot(groups).delta(before)
        run.worker_ms = cpu.get("worker", 0.0) / max(1, sent) * 1000
        return run
    finally:
        stop_workers(workers)
        if endpoint_id is not None:
            receiver.delete(endpoint_id)  # type: ignore[union-attr]


def deliveries_alone(ctx: Ctx, n: int, receiver: Receiver) -> RunResult:
    """n message.sent events emitted in one transaction from here (one deliver_event task each,
    published on commit) with the worker already running: commit → last delivered."""
    from django.db import transaction

    from shared.events import emit_many

    pool, c, p = SCALE_POOL
    ctx.fresh()
    endpoint_id = receiver.create(["message.sent"])
    workers = start_workers(ctx, "full", pool, c, p, 1)
    try:
        first = last_delivery_id()
        groups = {"worker": [w.pid for w in workers]}
        events = [
            ("message.sent", {"message_id": i, "provider": "telegram", "status": "sent"})
            for i in range(n)
        ]
        before = CpuSnapshot(groups)
        started = time.monotonic()
        with transaction.atomic():
            emit_many(ctx.org_id, events)
        done, ended, stalled = wait_done(delivered_count(first), n, stall=20, interval=0.05)
        cpu, busy, total = CpuSnapshot(groups).delta(before)
        worker = cpu.get("worker", 0.0)
        return RunResult(n, done, 0, ended - started, worker, cpu, busy, total, stalled)
    finally:
        stop_workers(workers)
        receiver.delete(endpoint_id)


def bare_at_zero(ctx: Ctx, n: int) -> RunResult:
    """Bare Celery, one POST per task, to the sandbox at 0 ms latency: the baseline of a task
    that makes one local HTTP call."""
    ctx.sandbox.client.configure(latency_ms=0)
    try:
        return run_bare(ctx, *SCALE_POOL, n)
    finally:
        ctx.sandbox.client.configure(latency_ms=LATENCY_MS)


def pg_connections() -> str:
    """Connections in use on the (shared) Postgres server now, of its max_connections."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), current_setting('max_connections') FROM pg_stat_activity")
        used, limit = cursor.fetchone()
    return f"{used} of {limit}"


def delivery_table(bare: RunResult, alone: RunResult) -> list[str]:
    def cpu(run: RunResult) -> str:
        return f"{run.worker_cpu / max(1, run.done) * 1000:.1f}"

    return [
        "| run (1 worker process) | N | per s | worker CPU ms each | vs (a) |",
        "|---|---:|---:|---:|---:|",
        f"| (a) bare Celery task making one POST (sandbox, 0 ms) | {bare.n} "
        f"| {bare.rate:.0f}{bare.note()} | {cpu(bare)} | 1.00 |",
        f"| (e) `deliver_event` to the receiver ({alone.n} emitted in one transaction) "
        f"| {alone.n} | {alone.rate:.0f}{alone.note()} | {cpu(alone)} "
        f"| {alone.rate / bare.rate:.2f} |",
    ]


def pairs_table(pairs: list[tuple[SendRun, SendRun]]) -> tuple[list[str], float]:
    rows = [
        "| pair | msg/s, no endpoint | msg/s, one endpoint | with / without "
        "| event deliveries/s (same run) | worker CPU ms/msg without | with (incl. deliveries) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for i, (without, with_one) in enumerate(pairs, 1):
        ratio = with_one.send_rate / without.send_rate if without.send_rate else 0.0
        ratios.append(ratio)
        rows.append(
            f"| {i} | {without.send_rate:.0f}{without.note()} "
            f"| {with_one.send_rate:.0f}{with_one.note()} | {ratio:.2f} "
            f"| {with_one.deliver_rate:.0f} | {without.worker_ms:.1f} | {with_one.worker_ms:.1f} |"
        )
    return rows, statistics.median(ratios)


def events_tables(
    bare: RunResult, alone: RunResult, pairs: list[tuple[SendRun, SendRun]], pg: str
) -> str:
    rows, ratio = pairs_table(pairs)
    verdict = "meets" if ratio >= 0.8 else "misses"
    pool, c, p = SCALE_POOL
    lines = [
        "Event deliveries alone:",
        "",
        *delivery_table(bare, alone),
        "",
        "Send rate with no endpoint vs one endpoint subscribed to `message.sent` "
        f"(N {pairs[0][0].n} each, alternating):",
        "",
        *rows,
        "",
        f"Send rate with one endpoint / without, median of the pairs: **{ratio:.2f}**. "
        f"Target ≥ 0.80: **{verdict} it**.",
        "",
        f"Every run: one worker process `--pool {pool} --concurrency {c} --prefetch-multiplier "
        f"{p}`; sends through the sandbox at {LATENCY_MS} ms, bulk enqueue through gunicorn. "
        "The endpoint (`http://127.0.0.1:<port>/hook`, created and deleted through "
        "`/api/webhook-endpoints/`; `WEBHOOK_ALLOW_HTTP` and `WEBHOOK_ALLOW_PRIVATE_TARGETS` on) "
        "is `bench.pipeline.receiver`, a threaded HTTP/1.1 server answering 200 at once. "
        "Deliveries/s = deliveries / (enqueue or commit → last `delivered` row); with sends they "
        "share the worker's threads. Send msg/s = sent / (enqueue → last `sent` row). (a) is "
        "`bench/bare.py`'s task against the sandbox at 0 ms: a task that makes one local POST. "
        f"Postgres connections in use at the start of the section: {pg} (a server shared with "
        "other harnesses; a run that stalls shows `sent x/N`, see var/bench/worker-0.log).",
    ]
    return "\n".join(lines)


def section_events(ctx: Ctx, n: int, reps: int) -> tuple[str, Receiver, float]:
    """The events tables; the receiver (still running) and the median send rate with no
    endpoint (the reference of the receipts section)."""
    pg = pg_connections()
    receiver = Receiver(ctx)
    try:
        bare = bare_at_zero(ctx, n)
        alone = deliveries_alone(ctx, n, receiver)
        pairs = []
        for _ in range(reps):
            pairs.append((send_run(ctx, n, None), send_run(ctx, n, receiver)))
            without, with_one = pairs[-1]
            print(
                f"send no endpoint {without.send_rate:.0f}, with {with_one.send_rate:.0f} msg/s; "
                f"deliveries {with_one.deliver_rate:.0f}/s",
                flush=True,
            )
    except BaseException:
        receiver.stop()
        raise
    send_rate = statistics.median(w.send_rate for w, _ in pairs)
    return events_tables(bare, alone, pairs, pg), receiver, send_rate
