"""(d) Rate-limit accuracy: instagram orgs at 5/20/50 msg/s, twice the demand, measured rates."""

from __future__ import annotations

import json
import sys
from io import StringIO

from bench.common import wait_for
from bench.pipeline.config import REDIS_URL
from bench.pipeline.stack import PROCS, Ctx, worker_cmd


def rate_limited_orgs(ctx: Ctx, rates: tuple[int, ...]) -> list[tuple[int, object, str]]:
    """One org per rate with an instagram integration limited to it (the sandbox too)."""
    from django.core.management import call_command

    from shared.models import Organization
    from shared.services.integrations import integration_connect

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
    return orgs


def create_demand(orgs: list[tuple[int, object, str]], seconds: float) -> list[int]:
    """2 x rate x seconds messages per org, created in bulks of 1000; their ids."""
    from shared.services.messages import message_create_bulk

    ids = []
    for rate, org, _ in orgs:
        count = int(2 * rate * seconds)
        items = [
            {"provider": "instagram", "to": str(20_000_000 + rate * 100_000 + i), "body": "rl"}
            for i in range(count)
        ]
        for start in range(0, count, 1000):
            created = message_create_bulk(
                organization=org, data={"messages": items[start : start + 1000]}
            )
            ids += [m.pk for m, _ in created]
    return ids


def deliver(ctx: Ctx, orgs: list[tuple[int, object, str]], seconds: float) -> None:
    """One worker (threads 64, prefetch 4) delivers the demand; waits for all to be terminal."""
    from shared.metrics import Metrics
    from shared.models import Message, MessageStatus

    host = f"rl{ctx.run}@bench"
    proc = PROCS.start("worker-rl", worker_cmd("corbi", "threads", 64, 4, host), ctx.env)
    metrics = Metrics.from_url(REDIS_URL)
    try:
        wait_for(
            lambda: host in metrics.workers_seen_within(30) or proc.poll() is not None,
            60,
            host,
            interval=0.2,
        )
        ids = create_demand(orgs, seconds)
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
        PROCS.stop(proc, timeout=20)


def section_rate_limits(ctx: Ctx, seconds: float, rates: tuple[int, ...] = (5, 20, 50)) -> str:
    ctx.fresh()
    orgs = rate_limited_orgs(ctx, rates)
    deliver(ctx, orgs, seconds)
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
