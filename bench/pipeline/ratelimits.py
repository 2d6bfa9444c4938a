"""(d) Rate-limit accuracy: orgs at a binding rate, twice the demand, measured rates and 429s.

`section_rate_limits` is the instagram table of the full run (5/20/50 msg/s); `binding_table`
is the edge section's version: any set of instagram rates, each group of rates on its own
worker, plus one Telegram chat at our per-chat limit with the sandbox's per-chat limit back on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import StringIO

from bench.common import wait_for
from bench.pipeline.stack import PROCS, Ctx, worker_cmd

CHAT_TOKEN = "7000009:rlCHATchat_token_0123456789abcdefgh"
CHAT_ID = 4_000_001


@dataclass
class Target:
    """One binding limit: its org, the configured rate, its messages and how to find its sends
    in the sandbox's recording (`path_part` in the path, and `chat_id` in the body if set)."""

    label: str
    rate: float
    provider: str
    path_part: str
    org: object
    items: list[dict] = field(default_factory=list)
    chat_id: int | None = None


def _org(slug: str) -> object:
    from django.core.management import call_command

    from shared.models import Organization

    out = StringIO()
    call_command(
        "create_member", org=slug, username=slug.replace("-", ""), role="admin", stdout=out
    )
    return Organization.objects.get(pk=json.loads(out.getvalue())["org_id"])


def rate_limited_orgs(ctx: Ctx, rates: Sequence[int], seconds: float) -> list[Target]:
    """One org per rate with an instagram integration limited to it (the sandbox too), and
    2 x rate x seconds messages for each."""
    from shared.services.integrations import integration_connect

    targets = []
    for rate in rates:
        ig_id = f"17841400000{rate:05d}"
        token = f"IGAAbench{rate:05d}" + "x" * 40
        ctx.sandbox.client.add_account(
            "instagram", access_token=token, ig_id=ig_id, username=f"b{rate}", rate_per_second=rate
        )
        org = _org(f"rl-{rate}")
        integration_connect(
            organization=org,
            provider="instagram",
            token=token,
            extra={"instagram_scoped_id": ig_id, "rate_limit_per_second": rate},
        )
        count = int(2 * rate * seconds)
        items = [
            {"provider": "instagram", "to": str(20_000_000 + rate * 100_000 + i), "body": "rl"}
            for i in range(count)
        ]
        targets.append(
            Target(f"instagram org {rate}/s", rate, "instagram", f"/{ig_id}/messages", org, items)
        )
    return targets


def telegram_chat_target(ctx: Ctx, seconds: float) -> Target:
    """One Telegram chat at our per-chat limit (settings.TELEGRAM_CHAT_RATE), the org limit
    non-binding (1000/s); the caller turns the sandbox's per-chat limit (1/s) back on."""
    from django.conf import settings

    from shared.services.integrations import integration_connect

    rate = float(settings.TELEGRAM_CHAT_RATE)
    ctx.sandbox.client.add_account("telegram", token=CHAT_TOKEN, bot_username="rl_chat_bot")
    org = _org("rl-chat")
    integration_connect(
        organization=org,
        provider="telegram",
        token=CHAT_TOKEN,
        extra={"rate_limit_per_second": 1000},
    )
    count = max(6, int(2 * rate * seconds))
    items = [{"provider": "telegram", "to": str(CHAT_ID), "body": f"rl {i}"} for i in range(count)]
    return Target(
        f"telegram, one chat ({rate:g}/s)",
        rate,
        "telegram",
        f"/bot{CHAT_TOKEN}/sendMessage",
        org,
        items,
        CHAT_ID,
    )


def create_demand(targets: Sequence[Target]) -> list[int]:
    """Every target's messages, created in bulks of 1000 as the API does; their ids."""
    from shared.services.messages import message_create_bulk

    ids = []
    for target in targets:
        for start in range(0, len(target.items), 1000):
            created = message_create_bulk(
                organization=target.org, data={"messages": target.items[start : start + 1000]}
            )
            ids += [m.pk for m, _ in created]
    return ids


def deliver(
    ctx: Ctx, targets: Sequence[Target], timeout: float, env: dict[str, str] | None = None
) -> None:
    """One worker (threads 64, prefetch 4) delivers the demand; waits for all to be terminal."""
    from shared.metrics import Metrics
    from shared.models import Message, MessageStatus

    host = f"rl{ctx.run}@bench"
    ctx.run += 1
    proc = PROCS.start(
        "worker-rl", worker_cmd("corbi", "threads", 64, 4, host), {**ctx.env, **(env or {})}
    )
    metrics = Metrics.from_url(ctx.env["REDIS_URL"])
    try:
        wait_for(
            lambda: host in metrics.workers_seen_within(30) or proc.poll() is not None,
            60,
            host,
            interval=0.2,
        )
        ids = create_demand(targets)
        rows_q = Message.objects.filter(pk__in=ids)
        done = (MessageStatus.SENT, MessageStatus.FAILED)
        try:
            wait_for(
                lambda: rows_q.filter(status__in=done).count() >= len(ids),
                timeout,
                "rate-limited messages",
                interval=0.2,
            )
        except RuntimeError as exc:
            print(f"  warning: {exc}; measuring what was sent", file=sys.stderr)
    finally:
        PROCS.stop(proc, timeout=20)


@dataclass
class Accuracy:
    sent: int
    measured: float
    throttled: int  # the sandbox's 429s for this target: sends we made over its limit


def accuracy(recorded: list[dict], target: Target) -> Accuracy:
    """Steady-state rate of the target's 200s (first and last second left out) and its 429s."""
    mine = [r for r in recorded if target.path_part in r["path"]]
    if target.chat_id is not None:
        mine = [r for r in mine if str((r.get("body") or {}).get("chat_id")) == str(target.chat_id)]
    ok = sorted(r["time"] for r in mine if r["status"] == 200)
    throttled = sum(1 for r in mine if r["status"] == 429 or r["outcome"] == "rate_limited")
    if len(ok) < 3:
        return Accuracy(len(ok), 0.0, throttled)
    trim = 1.0 if ok[-1] - ok[0] > 4 else 0.0
    window = [t for t in ok if ok[0] + trim <= t <= ok[-1] - trim]
    measured = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 2 else 0.0
    return Accuracy(len(ok), measured, throttled)


def section_rate_limits(ctx: Ctx, seconds: float, rates: tuple[int, ...] = (5, 20, 50)) -> str:
    ctx.fresh()
    targets = rate_limited_orgs(ctx, rates, seconds)
    deliver(ctx, targets, 2 * seconds + 60)
    recorded = ctx.sandbox.client.requests("instagram")
    rows = [
        "| configured msg/s | messages | measured msg/s (steady state) | error % | provider 429s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        acc = accuracy(recorded, target)
        error = (acc.measured - target.rate) / target.rate * 100
        rows.append(
            f"| {target.rate:g} | {acc.sent} | {acc.measured:.2f} | {error:+.1f} | {acc.throttled} |"
        )
    return "\n".join(rows)


def binding_table(
    ctx: Ctx,
    groups: Sequence[tuple[tuple[int, ...], float, int]],
    chat_seconds: float,
) -> str:
    """Binding limits: each (instagram rates, seconds, DELIVERY_SEND_THREADS) group on one
    worker, then one Telegram chat. Achieved vs configured (target ±5 %) and the sandbox's
    429s (target 0)."""
    rows = [
        "| limit | configured msg/s | messages sent | achieved msg/s (steady state) | error % "
        "| within ±5 % | sandbox 429s |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    runs: list[tuple[list[Target], float, dict[str, str]]] = []
    for rates, seconds, threads in groups:
        runs.append(
            (
                rate_limited_orgs(ctx, rates, seconds),
                2 * seconds + 60,
                {"DELIVERY_SEND_THREADS": str(threads)},
            )
        )
    runs.append(([telegram_chat_target(ctx, chat_seconds)], 2 * chat_seconds + 60, {}))
    for targets, timeout, env in runs:
        ctx.fresh()
        chat = targets[0].chat_id is not None
        if chat:
            ctx.sandbox.client.configure(telegram_chat_rate=1)
        try:
            deliver(ctx, targets, timeout, env)
        finally:
            if chat:
                ctx.sandbox.client.configure(telegram_chat_rate=100000)
        recorded = ctx.sandbox.client.requests(targets[0].provider)
        for target in targets:
            acc = accuracy(recorded, target)
            error = (acc.measured - target.rate) / target.rate * 100
            rows.append(
                f"| {target.label} | {target.rate:g} | {acc.sent} | {acc.measured:.2f} "
                f"| {error:+.1f} | {'yes' if abs(error) <= 5 else '**no**'} | {acc.throttled} |"
            )
    return "\n".join(rows)
