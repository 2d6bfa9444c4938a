"""`python -m bench.chaos`: set the stack up, run the scenario, the phases, and write the report."""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import time
from pathlib import Path

import bench.chaos
from bench.chaos import config
from bench.chaos.analysis import analyse, leak_check
from bench.chaos.config import DB_NAME, LOG_DIR, PROVIDERS, log
from bench.chaos.phases import run_phases
from bench.chaos.receipts import receipt_phase
from bench.chaos.report import receipts_report, report
from bench.chaos.scenario import Chaos, plan
from bench.chaos.stack import Stack, setup_django
from bench.chaos.workload import Enqueuer, Events, make_orgs
from bench.common import recreate_database
from devtools.procs import ROOT, wait_for


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=(bench.chaos.__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--orgs", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--receipts-only",
        action="store_true",
        help="set the stack up and run only the receipt phase (report to var/chaos/RECEIPTS.md)",
    )
    parser.add_argument("--receipt-messages", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate-limit", type=float, default=config.RATE_LIMIT)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if args.orgs is None:
        args.orgs = 1 if args.receipts_only else 20
    if args.output is None:
        args.output = str(
            LOG_DIR / "RECEIPTS.md" if args.receipts_only else ROOT / "bench" / "CHAOS.md"
        )
    if args.messages is None:
        args.messages = 1000 if args.quick else 5000
    if args.seed is None:
        args.seed = secrets.randbelow(10**6)
    return args


class ChaosRun:
    """One run: the stack, the enqueuer and scenario threads, the timings and the events."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.pace = 20.0 if args.quick else 75.0
        self.drain_deadline = 100.0 if args.quick else 600.0
        self.started = time.monotonic()
        load = os.getloadavg()
        self.timing: dict = {"load_start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"}
        self.events: Events = []
        self.stack = Stack(args.quick)
        self.orgs: list[dict] = []
        self.enq: Enqueuer | None = None
        self.chaos: Chaos | None = None
        self.t0_wall = 0.0

    def setup(self) -> None:
        """Own database, Redis, sandbox, web, the orgs, two workers and beat; all ready."""
        stack = self.stack
        log(f"seed {self.args.seed}; load average {self.timing['load_start']}; logs in {LOG_DIR}")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        for old in LOG_DIR.glob("*.log"):
            old.unlink()
        (stack.redis_dir / "dump.rdb").unlink(missing_ok=True)
        recreate_database(DB_NAME)
        stack.start_redis()
        stack.start_sandbox()
        setup_django(stack.make_env())
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        log(f"redis {stack.redis_url}, sandbox {stack.sandbox_url}; migrated {DB_NAME}")
        stack.start_web()
        self.orgs = make_orgs(stack, self.args.orgs)
        log(f"{len(self.orgs)} organizations x {len(PROVIDERS)} integrations connected")
        for name in ("w1", "w2"):
            stack.start_worker(name)
        stack.start_beat()
        from shared.metrics import Metrics

        metrics = Metrics.from_url(stack.redis_url)
        wait_for(
            lambda: {"w1@chaos", "w2@chaos"} <= set(metrics.workers_seen_within(60)),
            90,
            "both workers ready",
            interval=0.5,
        )
        stack.watch()
        self.timing["setup"] = time.monotonic() - self.started
        log(f"stack up in {self.timing['setup']:.0f} s; pids {stack.procs.live_pids()}")

    def start_load(self) -> tuple[Enqueuer, Chaos, float]:
        t0 = time.monotonic()
        self.t0_wall = time.time()
        messages = self.args.messages
        self.events.append(
            (self.t0_wall, "t0", f"enqueue {messages} messages over {self.pace:.0f} s")
        )
        self.enq = Enqueuer(self.stack, self.orgs, messages, self.pace, self.events)
        sched = plan(self.args.quick, self.pace)
        self.chaos = Chaos(self.stack, sched, t0, self.rng, self.events)
        self.enq.start()
        self.chaos.start()
        return self.enq, self.chaos, t0

    def drain(self, enq: Enqueuer, chaos: Chaos, t0: float) -> bool:
        """Wait until every message is terminal; True when the deadline came first."""
        from shared.models import Message, MessageStatus

        pending = Message.objects.filter(status__in=[MessageStatus.QUEUED, MessageStatus.SENDING])
        last_log = 0.0
        while True:
            time.sleep(2)
            for thread in (enq, chaos):
                if thread.failure:
                    raise RuntimeError(f"{type(thread).__name__} failed") from thread.failure
            # a worker that died on its own is not replaced: the run fails (see stack.watch)
            if not self.stack.any_worker_alive():
                log("no worker left alive; giving up on the main run")
                return True
            left = pending.count()
            elapsed = time.monotonic() - t0
            if time.monotonic() - last_log > 10:
                sent = Message.objects.filter(status=MessageStatus.SENT).count()
                log(f"t+{elapsed:.0f} s: {sent} sent, {left} pending, {enq.posted} enqueued")
                last_log = time.monotonic()
            if enq.done.is_set() and not chaos.is_alive() and left == 0:
                return False
            if enq.done.is_set() and elapsed > self.drain_deadline + self.pace:
                return True

    def collect(self, enq: Enqueuer, chaos: Chaos, deadline_hit: bool) -> int:
        """Analyse, run the phases, write the report; 1 when a target was missed."""
        log("collecting results")
        res = analyse(self.stack, chaos, deadline_hit, self.args.messages)
        phases = run_phases(self.stack, self.orgs, self.args.quick, self.events)
        self.receipts(phases)
        leaks = leak_check([*self.orgs, *([phases["crash"]["org"]] if "crash" in phases else [])])
        self.timing["total"] = time.monotonic() - self.started
        text, missed = report(
            self.args, res, chaos, self.events, self.t0_wall, self.timing, leaks, phases, self.stack
        )
        if enq.errors:
            text += f"\nBulk requests retried: {dict(enq.errors)}\n"
        print(text, flush=True)
        Path(self.args.output).write_text(text)
        log(f"wrote {self.args.output}; {'targets missed' if missed else 'all targets met'}")
        return 1 if missed else 0

    def receipts(self, phases: dict) -> None:
        """The receipt phase (after the others); a phase that cannot run fails the run."""
        log("phase: receipts in, events out")
        try:
            phases["receipts"] = receipt_phase(
                self.stack, self.args.quick, self.events, self.args.receipt_messages
            )
        except RuntimeError as exc:
            phases.setdefault("not_run", []).append(f"receipts: {exc}")

    def receipts_only(self) -> int:
        phases: dict = {"not_run": []}
        self.t0_wall = time.time()
        self.receipts(phases)
        self.timing["total"] = time.monotonic() - self.started
        text, missed = receipts_report(self.args, phases, self.events, self.t0_wall, self.timing)
        print(text, flush=True)
        Path(self.args.output).write_text(text)
        log(f"wrote {self.args.output}; {'targets missed' if missed else 'all targets met'}")
        return 1 if missed else 0

    def cleanup(self) -> None:
        # a second Ctrl-C must not interrupt the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.enq is not None:
            self.enq.stop.set()
        if self.chaos is not None:
            self.chaos.stopping.set()
            self.chaos.join(timeout=30)  # a kill/restart in progress finishes before the cleanup
        self.stack.watching.set()  # from here on every exit is ours
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        self.stack.procs.stop_all()
        log("all processes stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config.RATE_LIMIT = args.rate_limit

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Explicitly, also for SIGINT: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    run = ChaosRun(args)
    try:
        run.setup()
        if args.receipts_only:
            return run.receipts_only()
        enq, chaos, t0 = run.start_load()
        deadline_hit = run.drain(enq, chaos, t0)
        run.timing["enqueue"] = run.pace
        run.timing["drain"] = time.monotonic() - t0
        run.events.append(
            (time.time(), "end", "all rows terminal" if not deadline_hit else "deadline")
        )
        return run.collect(enq, chaos, deadline_hit)
    finally:
        run.cleanup()
