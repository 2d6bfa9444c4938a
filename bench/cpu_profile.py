"""`python -m bench.cpu_profile`: CPU per delivered message by process, and a py-spy profile of
the worker's send path (top 10 functions by own+children samples), for issue 13.

One worker (`--pool threads --concurrency 32 --prefetch-multiplier 1`, LOG_LEVEL INFO as
shipped) delivers N messages against the sandbox (100 ms latency), enqueued in this process
with `message_create_bulk` (1,000 per call), first Telegram only, then round-robin over
Telegram, WhatsApp, SendGrid and Instagram. Its own Postgres database (corbi_cpu) and Redis
db (10). CPU windows: first enqueue → last row sent or failed (psutil user+system); the
profile is a separate run of the same workload (py-spy --nonblocking, raw stacks).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis
from cryptography.fernet import Fernet

from bench.common import PG, recreate_database
from bench.pipeline.runs import wait_done
from bench.pipeline.stack import start_django
from bench.procstats import CpuSnapshot
from devtools import commands
from devtools.procs import ROOT, Procs, manage
from sandbox.testing import SandboxProcess

DB_NAME = "corbi_cpu"
REDIS_URL = "redis://127.0.0.1:6379/10"
LATENCY_MS = 100
LOG_DIR = ROOT / "var" / "bench-cpu"
PROCS = Procs(log_dir=LOG_DIR)
CHAT_BASE = 2_000_000

TOKENS = {
    "telegram": "7000002:cpuCPUcpu_token_0123456789abcdefghij",
    "whatsapp": "cpuCPUtwilioAuthToken0123456789",
    "sendgrid": "SG.cpuCPUsendgrid.key0123456789abcdef",
    "instagram": "IGAAcpuCPUinstagramToken0123456789",
}
WHATSAPP_SID = "AC" + "cd" * 16
IG_ID = "17841400000000042"
SENDER = "noreply@cpu.test"
FAST = {"rate_limit_per_second": 10000}
EXTRA = {
    "telegram": FAST,
    "whatsapp": {**FAST, "account_sid": WHATSAPP_SID, "from_whatsapp": "+14155238886"},
    "sendgrid": {**FAST, "from_email": SENDER},
    "instagram": {**FAST, "instagram_scoped_id": IG_ID},
}
SEND_ROOTS = ("deliver_messages", "_send_one")


def accounts(sandbox: SandboxProcess) -> None:
    client = sandbox.client
    client.configure(telegram_bot_rate=100000, telegram_chat_rate=100000)
    client.add_account("telegram", token=TOKENS["telegram"], bot_username="cpu_bot")
    client.add_account(
        "whatsapp",
        account_sid=WHATSAPP_SID,
        auth_token=TOKENS["whatsapp"],
        senders=["whatsapp:+14155238886"],
        session_window_hours=None,
    )
    client.add_account("sendgrid", api_key=TOKENS["sendgrid"], verified_senders=[SENDER])
    client.add_account("instagram", access_token=TOKENS["instagram"], ig_id=IG_ID, username="cpu")


def org() -> object:
    from shared.models import Organization
    from shared.services.integrations import integration_connect

    organization = Organization.objects.create(slug="cpu", name="CPU")
    for provider, token in TOKENS.items():
        integration_connect(
            organization=organization, provider=provider, token=token, extra=EXTRA[provider]
        )
    return organization


class Items:
    """Message items with fresh destinations every run."""

    def __init__(self) -> None:
        self.run = 0

    def make(self, n: int, mix: str) -> list[dict[str, str]]:
        self.run += 1
        base = CHAT_BASE + self.run * 100_000
        providers = ["telegram"] if mix == "telegram" else list(TOKENS)
        items = []
        for i in range(n):
            provider = providers[i % len(providers)]
            to = {
                "telegram": str(base + i),
                "whatsapp": f"+1415555{(base + i) % 10000:04d}",
                "sendgrid": f"user{base + i}@example.test",
                "instagram": str(base + i),
            }[provider]
            item = {"provider": provider, "to": to, "body": "cpu"}
            if provider == "sendgrid":
                item["subject"] = "cpu"
            items.append(item)
        return items


def start_worker(env: dict[str, str], hostname: str) -> object:
    from shared.metrics import Metrics

    argv = commands.celery_worker(
        hostname,
        "--prefetch-multiplier",
        "1",
        *commands.ISOLATED,
        pool="threads",
        concurrency=32,
        loglevel="INFO",
    )
    worker = PROCS.start("worker", argv, env)
    metrics = Metrics.from_url(REDIS_URL)
    deadline = time.monotonic() + 60
    while hostname not in metrics.workers_seen_within(30):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker did not start; see var/bench-cpu/worker.log")
        time.sleep(0.05)
    return worker


def run(
    organization: object, items: list[dict[str, str]], groups: dict[str, list[int]]
) -> tuple[int, int, float, dict[str, float]]:
    """Enqueue `items`, wait until each is sent or failed: (sent, failed, seconds, cpu)."""
    from shared.models import Message, MessageStatus
    from shared.services.messages import message_create_bulk

    first = Message.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    rows = Message.objects.filter(pk__gt=first)
    before = CpuSnapshot(groups)
    started = time.monotonic()
    for start in range(0, len(items), 1000):
        message_create_bulk(
            organization=organization, data={"messages": items[start : start + 1000]}
        )
    done_states = (MessageStatus.SENT, MessageStatus.FAILED)
    done, ended, _ = wait_done(
        lambda: rows.filter(status__in=done_states).count(), len(items), stall=30, interval=0.1
    )
    cpu, _, _ = CpuSnapshot(groups).delta(before)
    sent = rows.filter(status=MessageStatus.SENT).count()
    return sent, done - sent, ended - started, cpu


def inprocess(
    organization: object, items: Items, sandbox: SandboxProcess, n: int, rounds: int = 3
) -> str:
    """`message_deliver_batch` in this process, batches of 25 sent one after another (no
    executor), sandbox latency 0: CPU ms per message (`time.process_time`), the median of
    `rounds`; less exposed to other processes on the host than the worker's CPU."""
    from shared.delivery.batch import message_deliver_batch
    from shared.metrics import Metrics
    from shared.ratelimit import RateLimiter
    from shared.services.messages import message_create_bulk

    limiter = RateLimiter(redis.Redis.from_url(REDIS_URL))
    metrics = Metrics.from_url(REDIS_URL)
    sandbox.client.configure(latency_ms=0)
    parts = []
    try:
        for mix in ("telegram", "mixed"):
            results = []
            for _ in range(rounds + 1):  # the first is a warm-up
                created = message_create_bulk(
                    organization=organization, data={"messages": items.make(n, mix)}
                )
                ids = [m.pk for m, _ in created]
                t0 = time.process_time()
                for start in range(0, n, 25):
                    message_deliver_batch(
                        message_ids=ids[start : start + 25], limiter=limiter, metrics=metrics
                    )
                results.append((time.process_time() - t0) / n * 1000)
            ms = sorted(results[1:])[len(results[1:]) // 2]
            parts.append(f"{mix} {ms:.2f} (rounds {', '.join(f'{r:.2f}' for r in results[1:])})")
    finally:
        sandbox.client.configure(latency_ms=LATENCY_MS)
    return (
        f"In-process `message_deliver_batch`, {n} messages in batches of 25, inline sends, "
        "sandbox latency 0, CPU ms per message (median): " + "; ".join(parts) + "\n"
    )


def profile_top(
    raw: Path, n_messages: int, rate: int, top: int = 10, roots: tuple[str, ...] = SEND_ROOTS
) -> str:
    """Top functions under `roots` (all stacks when empty) by own+children samples (each
    function counted once per stack), from py-spy's raw (collapsed) output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        names = [_frame(f) for f in frames]
        found = [i for i, name in enumerate(names) if name.split(" ")[0] in roots]
        if roots and not found:
            continue
        below = names[found[0] :] if roots else names
        total += count
        for name in set(below):
            inclusive[name] += count
        own[below[-1]] += count
    ms = 1000 / rate / n_messages
    where = "stacks under " + " or ".join(f"`{r}`" for r in roots) if roots else "the whole worker"
    lines = [
        f"Samples holding the GIL ({where}): {total} at {rate} Hz = {total * ms:.2f} ms "
        "per message.",
        "",
        "| # | function | own+children % | own % | own+children ms/msg |",
        "|---:|---|---:|---:|---:|",
    ]
    for i, (name, count) in enumerate(inclusive.most_common(top), 1):
        lines.append(
            f"| {i} | `{name}` | {count / total * 100:.1f} | {own[name] / total * 100:.1f} "
            f"| {count * ms:.3f} |"
        )
    lines += ["", "Top own time:", ""]
    lines += [f"- `{name}` {count / total * 100:.1f} %" for name, count in own.most_common(top)]
    return "\n".join(lines)


def _frame(frame: str) -> str:
    """'func (path/to/module.py:123)' -> 'func (module.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_profile")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--mix", default="telegram,mixed")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--inprocess", type=int, default=1000, help="messages per in-process round (0: skip)"
    )
    parser.add_argument("--out", default=str(LOG_DIR), help="where raw profiles are written")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: list[str] = []

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with SandboxProcess(latency_ms=LATENCY_MS, procs=PROCS) as sandbox:
            env = commands.stack_env(
                fernet_key=Fernet.generate_key().decode(),
                database_url=f"{PG}/{DB_NAME}",
                redis_url=REDIS_URL,
                sandbox_url=sandbox.url,
                LOG_LEVEL="INFO",
            )
            recreate_database(DB_NAME)
            migrated = manage("migrate", "--noinput", "-v", "0", env=env, timeout=180)
            if migrated.returncode:
                raise RuntimeError("migrate failed: " + migrated.stderr[-2000:])
            start_django(env)
            broker = redis.Redis.from_url(REDIS_URL)
            broker.flushdb()
            accounts(sandbox)
            organization = org()
            items = Items()
            if args.inprocess:
                report.append(inprocess(organization, items, sandbox, args.inprocess))
                print(report[-1], flush=True)
            worker = start_worker(env, "cpu@bench")
            groups = {"worker": [worker.pid], "sandbox": [sandbox.process.pid]}
            groups["bench"] = [os.getpid()]
            try:
                for mix in args.mix.split(","):
                    run(organization, items.make(200, mix), groups)  # warm-up
                    sent, failed, secs, cpu = run(
                        organization, items.make(args.messages, mix), groups
                    )
                    per = {k: v / max(sent, 1) * 1000 for k, v in cpu.items()}
                    allp = sum(v for k, v in per.items() if k != "sandbox")
                    report.append(
                        f"### {mix}: {sent} sent, {failed} failed, {sent / secs:.0f} msg/s\n\n"
                        "CPU ms per delivered message: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))
                        + f"; all but the sandbox {allp:.2f}\n"
                    )
                    print(report[-1], flush=True)
                    if args.no_profile:
                        continue
                    raw = out / f"worker-{mix}.txt"
                    spy = subprocess.Popen(
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "--pid",
                            str(worker.pid),
                            "--rate",
                            str(args.rate),
                            "--format",
                            "raw",
                            "--nonblocking",
                            "--gil",
                            "-o",
                            str(raw),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.0)
                    try:
                        profiled, pfailed, _, _ = run(
                            organization, items.make(args.messages, mix), groups
                        )
                    finally:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=30)
                    send = profile_top(raw, max(profiled, 1), args.rate)
                    whole = profile_top(raw, max(profiled, 1), args.rate, roots=())
                    report.append(
                        f"#### py-spy, {mix} ({profiled} sent, {pfailed} failed), send path"
                        f"\n\n{send}\n"
                    )
                    report.append(f"#### py-spy, {mix}, whole worker\n\n{whole}\n")
                    print(*report[-2:], sep="\n", flush=True)
            finally:
                PROCS.stop(worker, timeout=20)
    finally:
        PROCS.stop_all(timeout=10)
    text = "\n".join(report)
    Path(tempfile.gettempdir(), "cpu_profile_report.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
