"""SQL statements the events code adds (in-process, captured): per delivered batch of 25 and
per recorded receipt, with no webhook endpoint vs one endpoint subscribed to every type."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.pipeline.config import LATENCY_MS
from bench.pipeline.signed import Receipts
from bench.pipeline.stack import Ctx

KIND = re.compile(r'^\s*(SELECT|INSERT|UPDATE|DELETE)\b(?:.*?\b(?:FROM|INTO)\b)?\s*"(\w+)"', re.S)
REPEAT = 3  # each step runs this often; the table shows the median and the range


def kinds(captured: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for q in captured.captured_queries:
        match = KIND.search(q["sql"])
        out[f"{match.group(1)} {match.group(2)}" if match else q["sql"].split()[0]] += 1
    return out


def captured(step: Callable[[], Any]) -> Counter[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        step()
    return kinds(queries)


def deliver_batch(ctx: Ctx) -> Callable[[], Any]:
    """A step delivering a fresh batch of DELIVERY_BATCH_SIZE telegram messages."""
    from django.conf import settings

    from shared.delivery.batch import message_deliver_batch
    from shared.metrics import Metrics
    from shared.ratelimit import RateLimiter
    from shared.services.messages import message_create_bulk
    from workers.tasks import send_executor

    items = [
        {"provider": "telegram", "to": str(c), "body": "q"}
        for c in ctx.chats(settings.DELIVERY_BATCH_SIZE)
    ]
    ids = [m.pk for m, _ in message_create_bulk(organization=ctx.org, data={"messages": items})]

    def step() -> None:
        outcomes = message_deliver_batch(
            message_ids=ids,
            limiter=RateLimiter(ctx.redis),
            metrics=Metrics.from_url(ctx.env["REDIS_URL"]),
            executor=send_executor(),
        )
        assert all(o.status == "sent" for o in outcomes.values()), outcomes

    return step


def record_twilio(rc: Receipts, status: str, again: bool = False) -> Callable[[], Any]:
    """A step recording one Twilio receipt for a fresh sent message (twice with `again`: the
    second one is what is captured when the step runs after a first call)."""
    from shared.receipts import twilio
    from shared.receipts.apply import record_receipts

    ((pk, sid, to),) = rc.sent_messages("whatsapp", 1)
    params = {"MessageSid": sid, "MessageStatus": status, "To": "whatsapp:" + to}
    receipts = twilio.parse(params, str(pk))
    if again:
        record_receipts([rc.whatsapp], receipts)
    return lambda: record_receipts([rc.whatsapp], receipts)


def measure_steps(ctx: Ctx, rc: Receipts) -> dict[str, list[Counter[str]]]:
    steps: dict[str, list[Counter[str]]] = {}
    deliver_batch(ctx)()  # warm-up: the first delivery in a process
    for _ in range(REPEAT):
        for name, step in (
            ("deliver a batch of 25 (`message_deliver_batch`)", deliver_batch(ctx)),
            ("record 1 Twilio receipt, applied", record_twilio(rc, "delivered")),
            ("record 1 Twilio receipt, duplicate", record_twilio(rc, "delivered", again=True)),
        ):
            steps.setdefault(name, []).append(captured(step))
    return steps


def median(runs: list[Counter[str]]) -> Counter[str]:
    return sorted(runs, key=lambda c: c.total())[len(runs) // 2]


EVENT_TABLES = ("shared_webhookendpoint", "shared_event", "shared_eventdelivery")


def on_events_tables(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k.split(" ")[-1] in EVENT_TABLES)


def spread(runs: list[Counter[str]]) -> str:
    totals = sorted(c.total() for c in runs)
    return "" if totals[0] == totals[-1] else f" ({totals[0]} to {totals[-1]})"


def sql_table(
    without: dict[str, list[Counter[str]]], with_one: dict[str, list[Counter[str]]]
) -> list[str]:
    lines = [
        "| step | SQL statements, no endpoint | one endpoint (every type) "
        "| on the events tables, no endpoint | one endpoint | added on the events tables |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for step, base_runs in without.items():
        base, more = median(base_runs), median(with_one[step])
        diff = {
            k: more[k] - base[k]
            for k in sorted(set(more) | set(base))
            if k.split(" ")[-1] in EVENT_TABLES
        }
        detail = ", ".join(f"`{k}` {v:+d}" for k, v in diff.items() if v) or "—"
        lines.append(
            f"| {step} | {base.total()}{spread(base_runs)} "
            f"| {more.total()}{spread(with_one[step])} "
            f"| {on_events_tables(base)} | {on_events_tables(more)} | {detail} |"
        )
    return lines


def section_sql(ctx: Ctx, rc: Receipts, url: str) -> str:
    from shared.events.endpoints import endpoint_create, endpoint_delete

    ctx.fresh()
    ctx.sandbox.client.configure(latency_ms=0)
    try:
        without = measure_steps(ctx, rc)
        endpoint, _ = endpoint_create(organization=ctx.org, data={"url": url, "events": []})
        try:
            with_one = measure_steps(ctx, rc)
        finally:
            endpoint_delete(organization=ctx.org, endpoint_id=endpoint.pk)
    finally:
        ctx.sandbox.client.configure(latency_ms=LATENCY_MS)
        ctx.fresh()  # the deliver_event tasks published meanwhile: no worker runs here
    lines = sql_table(without, with_one)
    batch = median(without["deliver a batch of 25 (`message_deliver_batch`)"])
    events = batch["SELECT shared_webhookendpoint"]
    listing = ", ".join(f"`{k}` x{v}" for k, v in sorted(batch.items()))
    applied = median(without["record 1 Twilio receipt, applied"])
    receipt = ", ".join(f"`{k}` x{v}" for k, v in sorted(applied.items()))
    lines += [
        "",
        f"With no endpoint the batch of 25 runs {events} `SELECT shared_webhookendpoint` "
        "(the `emit_many` lookup, one per organization per batch). Captured in this process with "
        f"`CaptureQueriesContext`, sandbox at 0 ms, after one warm-up batch, each step {REPEAT} "
        "times (median; the range in brackets when the runs differ); the deliveries the "
        "endpoint's events publish are dropped (no worker runs here).",
        "",
        f"The batch of 25 with no endpoint, by kind: {listing}. The number of `UPDATE "
        "shared_message` varies from batch to batch with the send threads' timing, not with "
        "the endpoint; the events tables' columns are exact.",
        "",
        f"One applied Twilio receipt with no endpoint, by kind: {receipt}.",
    ]
    return "\n".join(lines)
