"""Events out: deliveries/s to a fast local receiver through a real worker, and the send rate
with no webhook endpoint vs one endpoint subscribed to `message.sent`, in the same run."""

from __future__ import annotations

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


def events_tables(bare: RunResult, alone: RunResult, pairs: list[tuple[SendRun, SendRun]]) -> str:
    rows = [
        "| run (1 worker process) | N | msg/s sent | worker CPU ms/msg | event deliveries/s "
        "| deliveries vs bare 1-POST tasks |",
        "|---|---:|---:|---:|---:|---:|",
        f"| (a) bare Celery, one POST per task, sandbox 0 ms | {bare.n} | — "
        f"| {bare.worker_cpu / max(1, bare.done) * 1000:.1f} | {bare.rate:.0f}{bare.note()} | 1.00 |",
        f"| (e) `deliver_event` only ({alone.n} events emitted at once) | {alone.n} | — "
        f"| {alone.worker_cpu / max(1, alone.done) * 1000:.1f} | {alone.rate:.0f}{alone.note()} "
        f"| {alone.rate / bare.rate:.2f} |",
    ]
    for i, (without, with_one) in enumerate(pairs, 1):
        for label, run in (
            (f"(b) send, no endpoint #{i}", without),
            (f"(b) send + events #{i}", with_one),
        ):
            deliver = f"{run.deliver_rate:.0f}" if run.deliver_elapsed else "—"
            ratio = f"{run.deliver_rate / bare.rate:.2f}" if run.deliver_elapsed else "—"
            rows.append(
                f"| {label} | {run.n} | {run.send_rate:.0f}{run.note()} | {run.worker_ms:.1f} "
                f"| {deliver} | {ratio} |"
            )
    without_rate = sum(w.send_rate for w, _ in pairs) / len(pairs)
    with_rate = sum(e.send_rate for _, e in pairs) / len(pairs)
    ratio = with_rate / without_rate if without_rate else 0.0
    verdict = "meets" if ratio >= 0.8 else "misses"
    cpu = sum(e.worker_ms for _, e in pairs) / sum(w.worker_ms for w, _ in pairs)
    pool, c, p = SCALE_POOL
    rows += [
        "",
        f"Send rate with one endpoint subscribed to `message.sent` / without (mean of "
        f"{len(pairs)} alternating pair(s)): **{with_rate:.0f} / {without_rate:.0f} = "
        f"{ratio:.2f}**. Target ≥ 0.80: **{verdict} it**. Worker CPU per message with / without "
        f"(the window with an endpoint runs until the last delivery, so it includes them): "
        f"{cpu:.2f}x.",
        "",
        f"Every run: one worker process `--pool {pool} --concurrency {c} --prefetch-multiplier "
        f"{p}`, sends through the sandbox at {LATENCY_MS} ms, bulk enqueue through gunicorn. "
        "The endpoint (`http://127.0.0.1:<port>/hook`, created and deleted through "
        "`/api/webhook-endpoints/`; `WEBHOOK_ALLOW_HTTP`, `WEBHOOK_ALLOW_PRIVATE_TARGETS` on) is "
        "`bench.pipeline.receiver`, a threaded HTTP/1.1 server that answers 200 at once. Event "
        "deliveries/s: deliveries / (enqueue or commit → last `delivered` row); in the "
        "send + events runs they share the worker with the sends. (a) is `bench/bare.py`'s task "
        "against the sandbox at 0 ms latency: a task that makes one local HTTP POST.",
    ]
    return "\n".join(rows)


def section_events(ctx: Ctx, n: int, reps: int) -> tuple[str, Receiver, float]:
    """The events table; the receiver (still running) and the mean send rate with no endpoint."""
    receiver = Receiver(ctx)
    try:
        bare = bare_at_zero(ctx, n)
        alone = deliveries_alone(ctx, n, receiver)
        pairs = []
        for _ in range(reps):
            pairs.append((send_run(ctx, n, None), send_run(ctx, n, receiver)))
            print(
                f"send no endpoint {pairs[-1][0].send_rate:.0f}, with {pairs[-1][1].send_rate:.0f}"
                f" msg/s; deliveries {pairs[-1][1].deliver_rate:.0f}/s",
                flush=True,
            )
    except BaseException:
        receiver.stop()
        raise
    send_rate = sum(w.send_rate for w, _ in pairs) / len(pairs)
    return events_tables(bare, alone, pairs), receiver, send_rate
