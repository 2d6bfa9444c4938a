"""Issue 13: throughput when limits don't bind, and beyond bare Celery (`--only edge`).

1. Workloads under non-binding limits (every integration `rate_limit_per_second` 1000, sandbox
   account limits off, Telegram bot/chat rates raised): (a) mixed, 4 messaging providers x 2
   orgs; (b) Telegram only, 2 orgs, one distinct chat per message; (c) one org, Telegram, one
   distinct chat per message. Each enqueued through `POST /api/messages/bulk/` (1,000 per
   request) and delivered by one worker with the shipped pool (threads 32, prefetch 1, send
   threads = concurrency), alternating with bare Celery (`bench/bare.py`, threads 32, prefetch
   1, same N) for `rounds` rounds (ABBA order). Deferrals come from the workers' own
   `corbi_rate_limit_deferrals_total`; CPU is every process's user+system over the run.
2. Bare Celery at equal in-flight calls: both runs above make at most 32 provider calls at
   once; the medians per workload, ratio target >= 0.95.
3. Scaling of in-flight calls: the pipeline with DELIVERY_SEND_THREADS 32..256 (pool threads 32,
   prefetch 1) next to bare Celery with threads 32/64/128 and gevent 64/128/256, each row with
   what bounded it (from per-process CPU over the run).
4. Binding-limit accuracy: instagram orgs at 5/50/500 msg/s and one Telegram chat at our
   per-chat rate: achieved vs configured and the sandbox's 429s.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import StringIO

from bench.pipeline.config import LATENCY_MS
from bench.pipeline.ratelimits import binding_table
from bench.pipeline.runs import RunResult, _groups, last_message_id, run_bare, wait_done
from bench.pipeline.stack import Ctx, start_workers, stop_workers
from bench.procstats import CpuSnapshot
from devtools.commands import http_session

PROVIDERS = ("whatsapp", "sendgrid", "telegram", "instagram")
NONBINDING = 1000  # msg/s per integration: far above what one host delivers
WHATSAPP_FROM = "+14155238886"
CPU_PARTS = ("worker", "gunicorn", "postgres", "redis", "sandbox")
WORKLOADS = {
    "mixed": "(a) mixed: 4 providers x 2 orgs",
    "telegram": "(b) Telegram, 2 orgs, one chat per message",
    "single": "(c) one org, Telegram, one chat per message",
}


@dataclass
class EdgeOrg:
    """An org of the edge section: its id and its admin's API token."""

    slug: str
    org_id: int
    token: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}", "X-Org-ID": str(self.org_id)}


def credentials(i: int) -> dict[str, dict[str, object]]:
    """Org i's sandbox accounts (limits off, no WhatsApp window) by provider."""
    return {
        "whatsapp": {
            "account_sid": "AC" + f"ed{i:02x}" * 8,
            "auth_token": f"edge{i}BENCHtwilioAuthToken01234"[:32],
            "senders": ["whatsapp:" + WHATSAPP_FROM],
            "session_window_hours": None,
        },
        "sendgrid": {"api_key": f"SG.edge{i}SgKq4Wm8Zt2Pv6.Xr5Jn9Lc3Hb7Fd1Ty4Uo8Ie2Wa6Qs0Mk"},
        "telegram": {"token": f"700010{i}:edgeEDGEedge_token_0123456789abcdef"},
        "instagram": {"access_token": f"IGAAedge{i:02d}" + "y" * 40, "ig_id": f"178414000{i:08d}"},
    }


def token_and_extra(provider: str, account: dict[str, object], i: int) -> tuple[str, dict]:
    extra: dict[str, object] = {"rate_limit_per_second": NONBINDING}
    if provider == "whatsapp":
        extra |= {"account_sid": account["account_sid"], "from_whatsapp": WHATSAPP_FROM}
        return str(account["auth_token"]), extra
    if provider == "sendgrid":
        return str(account["api_key"]), extra | {"from_email": f"noreply@edge{i}.test"}
    if provider == "telegram":
        return str(account["token"]), extra
    return str(account["access_token"]), extra | {"instagram_scoped_id": account["ig_id"]}


def edge_orgs(ctx: Ctx, count: int = 2) -> list[EdgeOrg]:
    """`count` orgs, each with the 4 messaging providers connected at NONBINDING msg/s."""
    from django.core.management import call_command

    from shared.models import Organization
    from shared.services.integrations import integration_connect

    orgs = []
    for i in range(count):
        slug = f"edge-{i}"
        out = StringIO()
        call_command("create_member", org=slug, username=f"edge{i}", role="admin", stdout=out)
        info = json.loads(out.getvalue())
        org = Organization.objects.get(pk=info["org_id"])
        for provider, account in credentials(i).items():
            ctx.sandbox.client.add_account(provider, **account)
            token, extra = token_and_extra(provider, account, i)
            integration_connect(organization=org, provider=provider, token=token, extra=extra)
        orgs.append(EdgeOrg(slug, int(info["org_id"]), info["token"]))
    ctx.sandbox.client.configure(telegram_bot_rate=100000, telegram_chat_rate=100000)
    return orgs


def item(provider: str, i: int, chat: int) -> dict[str, str]:
    """Message i to `provider`; `chat` is its own Telegram chat."""
    if provider == "whatsapp":
        return {"provider": provider, "to": f"+1415555{100 + i % 100:04d}", "body": "edge"}
    if provider == "sendgrid":
        return {"provider": provider, "to": f"user{i}@example.test", "subject": "edge", "body": "e"}
    if provider == "telegram":
        return {"provider": provider, "to": str(chat), "body": "edge"}
    return {"provider": provider, "to": str(30_000_000 + i), "body": "edge"}


def workload(ctx: Ctx, name: str, orgs: Sequence[EdgeOrg], n: int) -> list[tuple[EdgeOrg, list]]:
    """The bulk requests (org, up to 1000 items) of one run, orgs interleaved."""
    chats = ctx.chats(n)  # new chats every run
    users = orgs[:1] if name == "single" else orgs
    per_org: list[list[dict]] = [[] for _ in users]
    for i in range(n):
        provider = PROVIDERS[(i // len(users)) % 4] if name == "mixed" else "telegram"
        per_org[i % len(users)].append(item(provider, i, chats[i]))
    requests = []
    for start in range(0, n, 1000):
        for org, items in zip(users, per_org, strict=True):
            if items[start : start + 1000]:
                requests.append((org, items[start : start + 1000]))
    return requests


@dataclass
class EdgeRun:
    """One run and what it cost: the rate, CPU by process, deferrals and 429s."""

    run: RunResult
    deferred: int = 0  # our limiter's deferrals (scope our_limit)
    provider_429: int = 0  # deferrals after a provider 429 (scope provider_429)
    sandbox_429: int = 0  # 429s the sandbox recorded
    deferred_by: dict[str, int] | None = None  # our limiter's deferrals by provider

    def deferrals(self) -> str:
        """'N (x.x %; telegram n, ...)' of the run's N messages."""
        by = ", ".join(f"{p} {c}" for p, c in sorted((self.deferred_by or {}).items()) if c)
        pct = self.deferred / max(self.run.n, 1) * 100
        return f"{self.deferred} ({pct:.1f} %{'; ' + by if by else ''})"

    def cpu_ms(self, part: str | None = None) -> float:
        done = max(self.run.done, 1)
        if part is not None:
            return self.run.cpu.get(part, 0.0) / done * 1000
        return sum(self.run.cpu.get(p, 0.0) for p in CPU_PARTS) / done * 1000

    def breakdown(self) -> str:
        return " / ".join(f"{self.cpu_ms(p):.1f}" for p in CPU_PARTS)

    def core_share(self, part: str) -> float:
        """The part's CPU over the run in cores (1.0 = one core busy all the time)."""
        return self.run.cpu.get(part, 0.0) / self.run.elapsed if self.run.elapsed else 0.0

    def host_busy(self) -> float:
        return self.run.host_busy / self.run.host_total * 100 if self.run.host_total else 0.0


def deferral_counts(ctx: Ctx) -> tuple[dict[str, int], int]:
    """(our limiter's deferrals by provider, deferrals after a provider 429) since the last
    `ctx.fresh()`, from the workers' corbi_rate_limit_deferrals_total."""
    from shared.metrics import Metrics

    snap = Metrics.from_url(ctx.env["REDIS_URL"]).snapshot()
    ours: dict[str, int] = {}
    theirs = 0
    for fields, value in snap.get("rate_limit_deferrals_total", {}).items():
        provider, _, scope = fields.partition("|")
        if scope == "our_limit":
            ours[provider] = ours.get(provider, 0) + int(value)
        else:
            theirs += int(value)
    return ours, theirs


def sandbox_429s(ctx: Ctx) -> int:
    return sum(1 for r in ctx.sandbox.client.requests() if r["status"] == 429)


def run_pipeline(
    ctx: Ctx,
    requests: list[tuple[EdgeOrg, list]],
    pool: str = "threads",
    c: int = 32,
    p: int = 1,
    send_threads: int | None = None,
) -> EdgeRun:
    """One worker delivers the bulk requests, enqueued through gunicorn as customers do."""
    from shared.models import Message, MessageStatus

    n = sum(len(items) for _, items in requests)
    ctx.fresh()
    saved = ctx.env
    if send_threads:
        ctx.env = {**saved, "DELIVERY_SEND_THREADS": str(send_threads)}
    try:
        workers = start_workers(ctx, "full", pool, c, p, 1)
    finally:
        ctx.env = saved
    try:
        first_id = last_message_id()
        rows = Message.objects.filter(pk__gt=first_id)
        # Done = past `sent`: WhatsApp rows move on to delivered/read through status callbacks.
        waiting = (MessageStatus.SCHEDULED, MessageStatus.QUEUED, MessageStatus.SENDING)
        session = http_session()
        groups = _groups(ctx, workers)
        before = CpuSnapshot(groups)
        started = time.monotonic()
        for org, items in requests:
            r = session.post(
                ctx.base + "/api/messages/bulk/",
                json={"messages": items},
                headers=org.headers(),
                timeout=60,
            )
            if r.status_code != 202:
                raise RuntimeError(f"bulk enqueue -> {r.status_code}: {r.text[:300]}")
        done, ended, stalled = wait_done(
            lambda: rows.exclude(status__in=waiting).count(), n, stall=20, interval=0.1
        )
        after = CpuSnapshot(groups)
        cpu, busy, total = after.delta(before)
        failed = rows.filter(status__in=(MessageStatus.FAILED, MessageStatus.UNDELIVERED)).count()
        result = RunResult(
            n, done, failed, ended - started, cpu.get("worker", 0.0), cpu, busy, total, stalled
        )
        ours, theirs = deferral_counts(ctx)
        return EdgeRun(result, sum(ours.values()), theirs, sandbox_429s(ctx), ours)
    finally:
        stop_workers(workers)


def run_bare_edge(ctx: Ctx, pool: str, c: int, n: int, tuned: bool = False) -> EdgeRun:
    """Bare Celery, prefetch multiplier 1; `tuned`: kombu's Redis pool sized to the pool."""
    saved = ctx.env
    if tuned:
        ctx.env = {**saved, "BENCH_BARE_MAX_CONNECTIONS": str(c + 16)}
    try:
        result = run_bare(ctx, pool, c, 1, n)
    finally:
        ctx.env = saved
    return EdgeRun(result, sandbox_429=sandbox_429s(ctx))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def bound_by(run: EdgeRun, in_flight: int) -> str:
    """What limited a run, read from its own CPU figures: the host's 2 cores, one process's
    core (a Python process's GIL, or the sandbox's event loop), or in-flight calls x latency."""
    cores = os.cpu_count() or 1
    busy = run.host_busy()
    shares = {part: run.core_share(part) for part in CPU_PARTS}
    top = max(shares, key=lambda part: shares[part])
    tops = ", ".join(f"{p} {shares[p]:.2f}" for p in sorted(shares, key=lambda q: -shares[q])[:3])
    ceiling = in_flight / (LATENCY_MS / 1000)
    ours = sum(shares.values())
    if busy >= 90:
        return (
            f"host CPU ({busy:.0f} % of {cores} cores, of which this stack {ours:.2f} cores, "
            f"the rest other users of the host; cores used: {tops})"
        )
    if shares[top] >= 0.85:
        return f"{top} process at {shares[top]:.2f} cores (one Python process; {tops})"
    if run.run.rate >= 0.8 * ceiling:
        return f"in-flight calls x latency (ceiling {ceiling:.0f} msg/s)"
    return f"none saturated: host {busy:.0f} %, cores used: {tops}"


def section_workloads(
    ctx: Ctx, orgs: Sequence[EdgeOrg], n: int, rounds: int
) -> tuple[str, str, dict[str, list[EdgeRun]]]:
    """Tables 1 and 2: every workload, pipeline and bare alternating."""
    rows = [
        "| workload | round | N | pipeline msg/s | bare msg/s | pipeline / bare | deferrals "
        "(% of N; by provider) | provider 429s | pipeline CPU ms/msg, all | worker / gunicorn / postgres "
        "/ redis / sandbox | bare CPU ms/msg, all | worker / gunicorn / postgres / redis / "
        "sandbox |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    runs: dict[str, list[EdgeRun]] = {}
    summary = [
        "| workload | pipeline msg/s (median) | bare msg/s (median) | ratio | target ≥ 0.95 "
        "| deferrals % (max) | target ≤ 1 % |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for name, label in WORKLOADS.items():
        fulls, bares = [], []
        for rnd in range(rounds):
            order = ("full", "bare") if rnd % 2 == 0 else ("bare", "full")
            got: dict[str, EdgeRun] = {}
            for kind in order:
                if kind == "full":
                    got[kind] = run_pipeline(ctx, workload(ctx, name, orgs, n))
                else:
                    got[kind] = run_bare_edge(ctx, "threads", 32, n)
            full, bare = got["full"], got["bare"]
            fulls.append(full)
            bares.append(bare)
            row = (
                f"| {label} | {rnd + 1} | {n} | {full.run.rate:.0f}{full.run.note()} "
                f"| {bare.run.rate:.0f}{bare.run.note()} | {full.run.rate / bare.run.rate:.2f} "
                f"| {full.deferrals()} | {full.sandbox_429} | {full.cpu_ms():.1f} "
                f"| {full.breakdown()} | {bare.cpu_ms():.1f} | {bare.breakdown()} |"
            )
            print(row, flush=True)
            rows.append(row)
        runs[name] = fulls
        fm = median([r.run.rate for r in fulls])
        bm = median([r.run.rate for r in bares])
        worst = max(r.deferred for r in fulls) / n * 100
        summary.append(
            f"| {label} | {fm:.0f} | {bm:.0f} | {fm / bm:.2f} "
            f"| {'meets' if fm / bm >= 0.95 else '**misses**'} | {worst:.1f} "
            f"| {'meets' if worst <= 1 else '**misses**'} |"
        )
    rows += [
        "",
        "Pipeline: one worker `--pool threads --concurrency 32 --prefetch-multiplier 1`, send "
        "threads = concurrency (32), bulk requests of 1,000 through gunicorn, rate = N / "
        "(first request → last row past `sent`: sent, failed or, for WhatsApp, delivered by "
        "the sandbox's status callbacks, which gunicorn serves and its CPU includes). Bare: `bench/bare.py`, one worker `--pool "
        "threads --concurrency 32 --prefetch-multiplier 1`, N tasks published by this script, "
        "each one Telegram sendMessage to the same sandbox (for every workload: its per-call "
        "cost is the baseline). Rounds alternate which goes first. Deferrals: the worker's "
        "`corbi_rate_limit_deferrals_total{scope=our_limit}`. CPU: user+system of every process "
        "over the run (Postgres = all backends, Redis = the server: both shared with other "
        "users of this host, so they include their noise); this script's polling and the bare "
        "run's publishing are left out.",
    ]
    summary += [
        "",
        "Both sides make at most 32 provider calls at once (the pipeline's 32 send threads, "
        "bare's 32 pool threads). Medians of the rounds in table 1.",
    ]
    return "\n".join(rows), "\n".join(summary), runs


def section_scaling_edge(
    ctx: Ctx,
    orgs: Sequence[EdgeOrg],
    n: int,
    send_threads: Sequence[int],
    bare_grid: Sequence[tuple[str, int]],
) -> str:
    """Table 3: the pipeline's send concurrency vs the best bare Celery configuration."""
    rows = [
        "| run | in-flight calls | N | msg/s | vs best bare | CPU ms/msg, all | worker / "
        "gunicorn / postgres / redis / sandbox | deferrals | host CPU busy | bounded by |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    bares: list[tuple[str, int, EdgeRun]] = []
    skipped: list[str] = []
    for pool, c in bare_grid:
        try:
            run = run_bare_edge(ctx, pool, c, n, tuned=True)
        except RuntimeError as exc:  # e.g. gevent not installed: say so under the table
            skipped.append(f"bare `--pool {pool} --concurrency {c}` did not run: {exc}")
            print(f"  {skipped[-1]}", flush=True)
            continue
        bares.append((f"bare Celery `--pool {pool} --concurrency {c}`", c, run))
        print(f"  bare {pool} {c}: {run.run.rate:.0f} msg/s", flush=True)
    fulls: list[tuple[str, int, EdgeRun]] = []
    for threads in send_threads:
        run = run_pipeline(ctx, workload(ctx, "mixed", orgs, n), send_threads=threads)
        fulls.append((f"pipeline, DELIVERY_SEND_THREADS={threads}", threads, run))
        print(f"  pipeline send threads {threads}: {run.run.rate:.0f} msg/s", flush=True)
    best = max((r.run.rate for _, _, r in bares), default=0.0) or 1.0
    best_label = max(bares, key=lambda b: b[2].run.rate)[0] if bares else "none"
    for label, in_flight, run in [*bares, *fulls]:
        rows.append(
            f"| {label} | {in_flight} | {n} | {run.run.rate:.0f}{run.run.note()} "
            f"| {run.run.rate / best:.2f} | {run.cpu_ms():.1f} | {run.breakdown()} "
            f"| {run.deferrals()} | {run.host_busy():.0f} % | {bound_by(run, in_flight)} |"
        )
    best_full = max(fulls, key=lambda f: f[2].run.rate) if fulls else None
    rows.append("")
    for line in skipped:
        rows += [line, ""]
    if best_full is not None:
        ratio = best_full[2].run.rate / best
        rows.append(
            f"Best pipeline ({best_full[0]}): **{ratio:.2f}x** the best bare ({best_label}) at "
            f"{best_full[2].cpu_ms():.1f} ms CPU per message, all processes. Target ≥ 2x at ≤ 2 ms: "
            f"{'meets' if ratio >= 2 and best_full[2].cpu_ms() <= 2 else '**misses**'}."
        )
    rows += [
        "",
        "Pipeline rows: workload (a) (mixed, 4 providers x 2 orgs), one worker `--pool threads "
        "--concurrency 32 --prefetch-multiplier 1` with `DELIVERY_SEND_THREADS` set; bare rows: "
        "one worker, prefetch multiplier 1, Telegram sendMessage. In-flight calls = send threads "
        "(pipeline) or pool size (bare). Bare rows here size kombu's Redis connection pool to "
        "the pool + 16 (`BENCH_BARE_MAX_CONNECTIONS`; the default 10 makes gevent's late acks "
        "fail with `Too many connections`). Bounded by: host ≥ 90 % busy, else a process using "
        f"≥ 0.85 cores, else in-flight / {LATENCY_MS} ms; cores used = CPU s / wall s per process.",
    ]
    return "\n".join(rows)


class EdgeSizes:
    """How much the edge section does: N 3,000 (600 with --quick)."""

    def __init__(self, quick: bool, n: int | None = None) -> None:
        self.n = n or (600 if quick else 3000)
        self.scale_n = max(300, self.n // 2)  # ten runs, some slow (gevent): half N keeps ≲ 8 min
        self.rounds = 2
        self.send_threads = (32, 128) if quick else (32, 64, 128, 256)
        self.bare_grid: tuple[tuple[str, int], ...] = (
            (("threads", 32), ("gevent", 128))
            if quick
            else (
                ("threads", 32),
                ("threads", 64),
                ("threads", 128),
                ("gevent", 64),
                ("gevent", 128),
                ("gevent", 256),
            )
        )
        seconds = 4.0 if quick else 6.0
        # (instagram rates, seconds of demand, DELIVERY_SEND_THREADS) per worker run
        self.rl_groups = (((5, 50), seconds, 64), ((500,), seconds / 2, 128))
        self.chat_seconds = 5.0 if quick else 6.0


def section_edge(ctx: Ctx, sizes: EdgeSizes, add: Callable[[str, str], None]) -> None:
    """Every table of the edge section, each passed to `add(title, body)` when it is done."""
    began = time.monotonic()
    orgs = edge_orgs(ctx)
    table1, table2, _ = section_workloads(ctx, orgs, sizes.n, sizes.rounds)
    add(
        f"Issue 13 (1) Non-binding limits: pipeline vs bare Celery (sandbox {LATENCY_MS} ms)",
        table1,
    )
    add("Issue 13 (2) Bare Celery at equal in-flight calls (32)", table2)
    add(
        "Issue 13 (3) In-flight calls: pipeline send threads vs best bare Celery",
        section_scaling_edge(ctx, orgs, sizes.scale_n, sizes.send_threads, sizes.bare_grid),
    )
    groups = "; ".join(
        f"{'/'.join(map(str, rates))} msg/s: {secs:g} s of demand, DELIVERY_SEND_THREADS {t}"
        for rates, secs, t in sizes.rl_groups
    )
    table4 = binding_table(ctx, sizes.rl_groups, sizes.chat_seconds)
    table4 += (
        "\n\nOne worker per group (`--pool threads --concurrency 64 --prefetch-multiplier 4`; "
        f"{groups}; the chat: {sizes.chat_seconds:g} s), 2 x rate x seconds messages created "
        "at once per org; achieved = 200s per second between the first and last second of its "
        "sends (sandbox arrival times); sandbox 429s = its per-account or per-chat limit "
        "refusing us (the Telegram chat row runs with the sandbox's per-chat limit back at "
        f"1/s). Whole section: {time.monotonic() - began:.0f} s."
    )
    add("Issue 13 (4) Binding limits: achieved vs configured", table4)
