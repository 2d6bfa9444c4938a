"""Receipts in: signed Twilio status callbacks and SendGrid batches through gunicorn, first time
and posted again (duplicates), next to the no-op baseline and the send rate of the same run."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass

from bench.pipeline.api import pct
from bench.pipeline.signed import Loaded, Receipts, Req, post_all
from bench.pipeline.stack import Ctx
from bench.procstats import CpuSnapshot

SENDGRID_BATCH = 100
ORDER = ("applied", "recorded", "duplicate", "early", "unknown_message")


@dataclass
class Row:
    label: str
    receipts_per_request: int
    loaded: Loaded
    gunicorn_ms: float  # gunicorn CPU ms per receipt (per request for the no-op)

    @property
    def receipts_rate(self) -> float:
        return self.loaded.rate * self.receipts_per_request


def measured(ctx: Ctx, label: str, reqs: list[Req], per: int, clients: int) -> Row:
    groups = {"gunicorn": [ctx.gunicorn_pid], "bench": [os.getpid()]}
    before = CpuSnapshot(groups)
    loaded = post_all(reqs, clients)
    cpu, _, _ = CpuSnapshot(groups).delta(before)
    ms = cpu.get("gunicorn", 0.0) / max(1, len(reqs) * per) * 1000
    row = Row(label, per, loaded, ms)
    print(f"{label}: {row.receipts_rate:.0f} receipts/s {dict(loaded.outcomes)}", flush=True)
    return row


def noop_reqs(ctx: Ctx, n: int) -> list[Req]:
    headers = {**ctx.headers(), "Content-Type": "application/json"}
    body = json.dumps({"provider": "telegram", "to": "1", "body": "bench"}).encode()
    return [Req(ctx.base + "/bench/noop/", body, headers)] * n


def twilio_rows(ctx: Ctx, rc: Receipts, n: int, clients: int) -> list[Row]:
    warm = rc.twilio(rc.sent_messages("whatsapp", clients * 2), "delivered")
    post_all(warm, clients)
    reqs = rc.twilio(rc.sent_messages("whatsapp", n), "delivered")
    first = measured(ctx, "Twilio status callback `delivered`", reqs, 1, clients)
    again = measured(ctx, "the same callbacks again (duplicates)", reqs, 1, clients)
    return [first, again]


def sendgrid_rows(ctx: Ctx, rc: Receipts, batches: int, clients: int) -> list[Row]:
    per = SENDGRID_BATCH
    warm = rc.sendgrid_bodies(rc.sent_messages("sendgrid", per * 2), per)
    post_all(rc.sendgrid_signed(warm), 2)
    bodies = rc.sendgrid_bodies(rc.sent_messages("sendgrid", per * batches), per)
    label = f"SendGrid batch of {per} `delivered`"
    first = measured(ctx, label, rc.sendgrid_signed(bodies), per, clients)
    again = measured(
        ctx, "the same batches again (duplicates)", rc.sendgrid_signed(bodies), per, clients
    )
    return [first, again]


def outcome_mix(outcomes: Counter[str]) -> str:
    total = sum(outcomes.values()) or 1
    keys = [k for k in ORDER if outcomes.get(k)] + sorted(set(outcomes) - set(ORDER))
    return ", ".join(f"{k} {outcomes[k] / total * 100:.0f} %" for k in keys) or "—"


def table(rows: list[Row], noop: Row, send_rate: float, clients: int) -> list[str]:
    lines = [
        "| run | clients | requests | receipts | req/s | receipts/s | receipts/s ÷ no-op req/s "
        "| receipts/s ÷ send msg/s | p50 ms | p99 ms | gunicorn CPU ms/receipt | outcomes "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in [noop, *rows]:
        lo = row.loaded
        is_noop = row is noop
        lines.append(
            f"| {row.label} | {clients} | {lo.requests} "
            f"| {'—' if is_noop else lo.requests * row.receipts_per_request} | {lo.rate:.0f} "
            f"| {'—' if is_noop else f'{row.receipts_rate:.0f}'} "
            f"| {row.receipts_rate / noop.loaded.rate:.2f} "
            f"| {'—' if is_noop else f'{row.receipts_rate / send_rate:.2f}'} "
            f"| {pct(lo.latencies, 0.5):.1f} | {pct(lo.latencies, 0.99):.1f} "
            f"| {row.gunicorn_ms:.2f} | {'—' if is_noop else outcome_mix(lo.outcomes)} "
            f"| {lo.errors} |"
        )
    return lines


def section_receipts(
    ctx: Ctx, n: int, batches: int, send_rate: float, clients: int = 8
) -> tuple[str, Receipts]:
    """Receipts/s per provider through gunicorn; the integrations for the SQL evidence."""
    ctx.fresh()
    rc = Receipts(ctx)
    post_all(noop_reqs(ctx, clients * 2), clients)  # warm-up
    noop = measured(ctx, "POST /bench/noop/ (baseline)", noop_reqs(ctx, n), 1, clients)
    rows = twilio_rows(ctx, rc, n, clients) + sendgrid_rows(ctx, rc, batches, clients)
    lines = table(rows, noop, send_rate, clients)
    twilio_dup = rows[1].receipts_rate / rows[0].receipts_rate
    sendgrid_dup = rows[3].receipts_rate / rows[2].receipts_rate
    verdict = "meets" if min(twilio_dup, sendgrid_dup) >= 1.0 else "misses"
    lines += [
        "",
        f"Duplicates vs first time (receipts/s): Twilio **{twilio_dup:.2f}**, SendGrid "
        f"**{sendgrid_dup:.2f}**. Target ≥ 1.00 (a repeated receipt changes nothing, so it should "
        f"cost no more): **{verdict} it**.",
        "",
        f"gunicorn `-w 2 --threads 4`, {clients} client threads in this process (one keep-alive "
        "session each), every request prepared and signed before the clock starts "
        "(`X-Twilio-Signature` from the twilio SDK's `RequestValidator` over `PUBLIC_BASE_URL` + "
        "path and query; SendGrid ECDSA P-256 over timestamp + body with a key generated here, "
        "its public key stored as `extra.event_webhook_public_key`). Each receipt names a "
        "distinct `sent` message inserted beforehand; no webhook endpoint exists, so the events "
        "code adds one SELECT per applied receipt. "
        f"Send msg/s = {send_rate:.0f}: the pipeline with no endpoint in the events section of "
        "this run (median of its runs, 1 worker process); a WhatsApp or SendGrid message "
        "typically brings 2-4 receipts (sent/processed, delivered, read/open), so a ratio ≥ 3 "
        "keeps pace with a full-speed send.",
    ]
    return "\n".join(lines), rc
