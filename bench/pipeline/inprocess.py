"""Per-delivery work measured in this process: CPU per message, SQL queries per delivery."""

from __future__ import annotations

import re
import time
from typing import Any

import redis

from bench.pipeline.config import LATENCY_MS, REDIS_URL
from bench.pipeline.stack import Ctx


class InProcess:
    """Deliveries of the bench org's telegram messages in this process, `send` timed apart."""

    def __init__(self, ctx: Ctx, n: int) -> None:
        from shared.metrics import Metrics
        from shared.models import Integration, Organization
        from shared.ratelimit import RateLimiter

        self.ctx, self.n = ctx, n
        self.org = Organization.objects.get(pk=ctx.org_id)
        self.integration = Integration.objects.get(organization=self.org, provider="telegram")
        self.limiter = RateLimiter(redis.Redis.from_url(REDIS_URL))
        self.metrics = Metrics.from_url(REDIS_URL)
        self.send_cpu = 0.0

    def timed_adapter(self, *args: Any, **kwargs: Any) -> Any:
        """integration_adapter whose `send` adds its process CPU time to self.send_cpu."""
        from shared.services.providers import integration_adapter

        adapter = integration_adapter(*args, **kwargs)
        real = adapter.send

        def send(message: Any) -> Any:
            t0 = time.process_time()
            try:
                return real(message)
            finally:
                self.send_cpu += time.process_time() - t0

        adapter.send = send
        return adapter

    def make(self, count: int) -> list[int]:
        from shared.services.messages import message_create_bulk

        chats = self.ctx.chats(count)
        items = [{"provider": "telegram", "to": str(c), "body": "cpu"} for c in chats]
        return [
            m.pk for m, _ in message_create_bulk(organization=self.org, data={"messages": items})
        ]

    def deliver(self, ids: list[int]) -> dict:
        from shared.delivery.batch import message_deliver_batch

        return message_deliver_batch(message_ids=ids, limiter=self.limiter, metrics=self.metrics)

    def measure(self, size: int) -> dict[str, float]:
        n = self.n
        ids = self.make(n)
        self.send_cpu = 0.0
        statuses: dict[str, int] = {}
        t0 = time.process_time()
        w0 = time.perf_counter()
        for start in range(0, n, size):
            for outcome in self.deliver(ids[start : start + size]).values():
                statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
        total = (time.process_time() - t0) / n * 1000
        return {
            "total": total,
            "send": self.send_cpu / n * 1000,
            "wall": (time.perf_counter() - w0) / n * 1000,
            "sent": statuses.get("sent", 0),
        }

    def send_alone(self) -> float:
        """CPU ms per message of the same sends alone: a fresh adapter each, only `send` timed."""
        from shared.providers.base import OutboundMessage
        from shared.services.providers import integration_adapter

        alone = 0.0
        for chat in self.ctx.chats(self.n):
            adapter = integration_adapter(self.integration)
            t1 = time.process_time()
            adapter.send(OutboundMessage(to=str(chat), body="cpu", reference=f"cpu-{chat}"))
            alone += time.process_time() - t1
        return alone / self.n * 1000


def inprocess_cpu(ctx: Ctx, n: int) -> str:
    """message_deliver(_batch) in this process against the sandbox at 0 ms latency, CPU per message."""
    from django.conf import settings

    import shared.delivery.sending as sending_module
    from shared.services.providers import integration_adapter

    ctx.fresh()
    run = InProcess(ctx, n)
    batch = settings.DELIVERY_BATCH_SIZE
    ctx.sandbox.client.configure(latency_ms=0)
    sending_module.integration_adapter = run.timed_adapter
    try:
        for size in (1, batch):  # warm-up: connections, imports, caches
            run.deliver(run.make(size))
        one, many = run.measure(1), run.measure(batch)
        sending_module.integration_adapter = integration_adapter
        alone = run.send_alone()
    finally:
        sending_module.integration_adapter = integration_adapter
        ctx.sandbox.client.configure(latency_ms=LATENCY_MS)
    ctx.fresh()
    return inprocess_table(n, batch, one, many, alone)


def inprocess_table(
    n: int, batch: int, one: dict[str, float], many: dict[str, float], alone: float
) -> str:
    outside = {k: r["total"] - r["send"] for k, r in (("one", one), ("many", many))}
    verdict = "meets" if outside["many"] <= 2.0 else "misses"
    return "\n".join(
        [
            f"In-process delivery of {n} messages, sandbox latency 0 ms, sends one after another "
            f"(no executor), `time.process_time()`; sent {one['sent']} and {many['sent']}; "
            f"wall {one['wall']:.1f} and {many['wall']:.1f} ms/msg:",
            "",
            f"| part, CPU ms/msg | one id per call | batches of {batch} |",
            "|---|---:|---:|",
            f"| `message_deliver_batch` total | {one['total']:.2f} | {many['total']:.2f} |",
            f"| adapter `send` (timed inside the same run) | {one['send']:.2f} "
            f"| {many['send']:.2f} |",
            f"| **outside the HTTP call** (total - send in run) | **{outside['one']:.2f}** "
            f"| **{outside['many']:.2f}** |",
            "",
            f"Adapter `send` alone (separate loop, fresh adapter each): {alone:.2f} ms/msg. "
            f"Target ≤ 2 ms outside the HTTP call: batches of {batch} measure "
            f"**{outside['many']:.2f} ms — {verdict} it**. The worker's CPU per message in the "
            "live run (table above) adds Celery, task events and the threads' contention.",
        ]
    )


def query_table(ctx: Ctx, org: Any, r: redis.Redis) -> tuple[list[str], Any]:
    """SQL queries and wall ms of a first and a steady-state delivery and of one batch; returns
    the table and the steady-state delivery's captured queries."""
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from shared.delivery.batch import message_deliver, message_deliver_batch
    from shared.metrics import Metrics
    from shared.ratelimit import RateLimiter
    from shared.services.messages import message_create, message_create_bulk
    from workers.tasks import send_executor

    lines = ["| step | SQL queries | wall ms |", "|---|---:|---:|"]
    for label in ("first delivery in a process", "steady-state delivery"):
        (chat,) = ctx.chats(1)
        message, _ = message_create(
            organization=org, data={"provider": "telegram", "to": str(chat), "body": "q"}
        )
        with CaptureQueriesContext(connection) as captured:
            t0 = time.perf_counter()
            outcome = message_deliver(
                message_id=message.pk, limiter=RateLimiter(r), metrics=Metrics.from_url(REDIS_URL)
            )
            wall = (time.perf_counter() - t0) * 1000
        assert outcome.status == "sent", outcome
        lines.append(f"| {label} | {len(captured)} | {wall:.0f} |")
    single = captured
    size = settings.DELIVERY_BATCH_SIZE
    items = [{"provider": "telegram", "to": str(c), "body": "q"} for c in ctx.chats(size)]
    ids = [m.pk for m, _ in message_create_bulk(organization=org, data={"messages": items})]
    with CaptureQueriesContext(connection) as captured:
        t0 = time.perf_counter()
        outcomes = message_deliver_batch(
            message_ids=ids,
            limiter=RateLimiter(r),
            metrics=Metrics.from_url(REDIS_URL),
            executor=send_executor(),
        )
        wall = (time.perf_counter() - t0) * 1000
    assert all(o.status == "sent" for o in outcomes.values()), outcomes
    lines.append(
        f"| batch of {size} ({len(captured) / size:.2f} queries per message) "
        f"| {len(captured)} | {wall:.0f} |"
    )
    return lines, single


def query_kinds(captured: Any) -> str:
    kinds: dict[str, int] = {}
    for q in captured.captured_queries:
        match = re.search(
            r'(SELECT|INSERT|UPDATE|DELETE).*?(?:FROM|INTO|UPDATE)\s+"(\w+)"', q["sql"]
        )
        key = f"{match.group(1)} {match.group(2)}" if match else q["sql"][:30]
        kinds[key] = kinds.get(key, 0) + 1
    return (
        "Steady-state queries by kind: "
        + ", ".join(f"`{k}` x{v}" for k, v in sorted(kinds.items()))
        + f" (wall time includes the {LATENCY_MS} ms sandbox latency; the batch's sends run "
        "at once on the worker's send threads)."
    )


def delivery_cpu(ctx: Ctx, org: Any, r: redis.Redis) -> str:
    """CPU spent by the delivering thread per message, and by the per-task adapter build
    (Fernet decrypt + a new requests.Session, hence a new TCP connection per send)."""
    from shared.delivery.batch import message_deliver
    from shared.metrics import Metrics
    from shared.models import Integration
    from shared.ratelimit import RateLimiter
    from shared.services.messages import message_create
    from shared.services.providers import integration_adapter

    integration = Integration.objects.get(organization=org, provider="telegram")
    reps = 20
    cpu = 0.0
    for chat in ctx.chats(reps):
        message, _ = message_create(
            organization=org, data={"provider": "telegram", "to": str(chat), "body": "q"}
        )
        t0 = time.thread_time()
        message_deliver(
            message_id=message.pk, limiter=RateLimiter(r), metrics=Metrics.from_url(REDIS_URL)
        )
        cpu += time.thread_time() - t0
    t0 = time.thread_time()
    for _ in range(200):
        integration_adapter(integration)
    adapter_ms = (time.thread_time() - t0) / 200 * 1000
    return (
        f"CPU per delivery in the delivering thread: **{cpu / reps * 1000:.1f} ms** "
        f"(of which building the adapter — decrypt + new `requests.Session` — "
        f"{adapter_ms:.2f} ms). At 2 cores this alone caps one host at "
        f"~{2 / (cpu / reps):.0f} msg/s before Celery, Redis and Postgres CPU."
    )


def section_queries(ctx: Ctx) -> str:
    from shared.models import Organization

    ctx.fresh()
    org = Organization.objects.get(pk=ctx.org_id)
    r = redis.Redis.from_url(REDIS_URL)
    lines, single = query_table(ctx, org, r)
    lines += ["", query_kinds(single), "", delivery_cpu(ctx, org, r)]
    ctx.fresh()
    return "\n".join(lines)
