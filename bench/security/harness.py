"""The security run's stack (sandbox, gunicorn, a worker, beat, Flower) and its HTTP and DB access."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import psycopg
import redis
import requests
from cryptography.fernet import Fernet

from bench.common import PG, recreate_database
from bench.security.canaries import make_canaries
from bench.security.config import DB_NAME, PROVIDERS, REDIS_URL, extra_for, sandbox_accounts
from bench.security.oauth import oauth_env
from bench.security.receiver import EventReceiver
from devtools import commands
from devtools.procs import Proc, Procs, free_port, manage, wait_for
from sandbox.testing import SandboxProcess

PEOPLE = (
    ("admin", "secorg", "sec-admin", "admin"),
    ("member", "secorg", "sec-member", "member"),
    ("outsider", "otherorg", "sec-outsider", "admin"),
)


def http_ok(url: str, **kwargs: object) -> bool:
    return (commands.http_status(url, **kwargs) or 500) < 500


class Run:
    """One security run: the stack, the collected evidence and the results table."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs = Procs(log_dir=work)
        self.generation = 0  # every start gets its own log file: <name>-<generation>.log
        self.tokens = make_canaries()
        self.old_key = Fernet.generate_key().decode()
        self.new_key = Fernet.generate_key().decode()
        self.responses: list[str] = []  # bodies and headers of every response we collected
        self.rows: list[tuple[str, str, str, bool]] = []  # (measure, value, target, ok)
        self.sweep: list[tuple[str, int, int, int]] = []
        self.findings: list[str] = []
        self.notes: set[str] = set()
        self.web_port = free_port()
        self.flower_port = free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.sandbox: SandboxProcess | None = None
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.people: dict[str, dict] = {}
        self.st_runs: list[dict] = []
        self.deploy_output = ""
        self.quick = False
        self.receiver = EventReceiver()  # events out land here (allowlisted: its ip:port only)
        self.flow_endpoint = 0
        self.tables: list[tuple[str, list[str], list[list[str]]]] = []  # (title, head, rows)

    # --- environment and processes ------------------------------------------------------------

    def env(self, fernet: str | None = None) -> dict[str, str]:
        return commands.stack_env(
            fernet_key=fernet or self.old_key,
            database_url=f"{PG}/{DB_NAME}",
            redis_url=REDIS_URL,
            sandbox_url=self.sandbox.url if self.sandbox else "",
            LOG_LEVEL="DEBUG",
            TEST_CONNECTION_TIMEOUT_SECONDS="5",
            RATE_LIMIT_TELEGRAM_CHAT="1000",
            PUBLIC_BASE_URL=self.base,
            META_APP_SECRET=self.tokens["meta_app_secret"],
            META_WEBHOOK_VERIFY_TOKEN=self.tokens["meta_verify_token"],
            **oauth_env(self),
            # http:// to the harness's own receiver only (its exact ip:port); nothing else private.
            WEBHOOK_ALLOW_HTTP="1",
            WEBHOOK_ALLOW_PRIVATE_TARGETS="0",
            WEBHOOK_PRIVATE_TARGET_ALLOWLIST=f"127.0.0.1:{self.receiver.port}",
            **commands.delivery_timings(
                provider_timeout=5, lease=20, backoff=0.3, sweep_every=2, grace=10
            ),
        )

    def manage(self, *args: str, fernet: str | None = None, env: dict | None = None):
        return manage(*args, env=env or self.env(fernet), timeout=180)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.generation += 1
        log = self.work / f"{name}-{self.generation}.log"
        return self.procs.start(name, argv, env, log=log)

    def stop(self, name: str, timeout: float = 30.0) -> None:
        proc = self.procs.get(name)
        if proc is not None:
            self.procs.stop(proc, timeout=timeout)

    def start_web(
        self, fernet: str, name: str = "web", port: int = 0, env: dict | None = None
    ) -> None:
        port = port or self.web_port
        options = ("--timeout", "60", "--access-logfile", "-", "--log-level", "debug")
        argv = commands.gunicorn(port, *options)
        proc = self.start(name, argv, env or self.env(fernet))
        ready = f"http://127.0.0.1:{port}/health/"
        self.procs.wait_ready(proc, lambda: http_ok(ready), 60, "gunicorn", 0.2)

    def start_worker(self, fernet: str) -> None:
        hostname = f"sec{self.generation}@bench"
        argv = commands.celery_worker(hostname, pool="threads", concurrency=16, loglevel="DEBUG")
        proc = self.start("worker", argv, self.env(fernet))
        self.procs.wait_ready(proc, lambda: "ready." in proc.log_text(), 60, "worker ready", 0.2)

    def start_stack(self) -> None:
        self.sandbox = SandboxProcess(procs=self.procs).__enter__()
        self.sandbox.client.add_accounts(sandbox_accounts(self.tokens))
        self.sandbox.client.configure(telegram_chat_rate=1000, telegram_bot_rate=1000)
        recreate_database(DB_NAME)
        self.redis.flushdb()
        result = self.manage("migrate", "--noinput")
        if result.returncode:
            raise RuntimeError("migrate failed: " + result.stderr[-2000:])
        for key, org, user, role in PEOPLE:
            out = self.manage("create_member", "--org", org, "--username", user, "--role", role)
            self.people[key] = json.loads(out.stdout.strip().splitlines()[-1])
        self.start_web(self.old_key)
        self.start_worker(self.old_key)
        schedule = self.work / "beat-schedule"
        self.start("beat", commands.celery_beat(schedule, "DEBUG"), self.env(self.old_key))
        flower = commands.flower(self.flower_port, "u:p")
        self.start("flower", flower, self.env(self.old_key))
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{self.flower_port}/api/tasks", auth=("u", "p")),
            60,
            "flower",
            interval=0.2,
        )

    def stop_stack(self) -> None:
        self.procs.stop_all()
        self.receiver.close()
        if self.sandbox is not None:
            self.sandbox.__exit__(None, None, None)

    # --- HTTP ---------------------------------------------------------------------------------

    def headers(self, who: str, org: str | None = None) -> dict[str, str]:
        person = self.people[who]
        return {
            "Authorization": f"Token {person['token']}",
            "X-Org-ID": str(org or person["org_id"]),
        }

    def api(
        self, method: str, path: str, who: str = "admin", record: bool = True, **kwargs
    ) -> requests.Response:
        """One API call; its answer joins the sweep unless `record` is False (the create and
        rotate answers that show a signing secret once: the secret is captured instead)."""
        base = kwargs.pop("base", self.base)
        response = requests.request(
            method, base + path, headers=self.headers(who), timeout=30, **kwargs
        )
        if record:
            self.responses.append(f"{dict(response.headers)}\n{response.text}")
        return response

    def capture_secret(self, label: str, response: requests.Response) -> str:
        """The `whsec_` secret a create/rotate answer shows once, kept as a canary."""
        secret = response.json()["secret"]
        self.tokens[f"whsec {label}"] = secret
        self.responses.append(str(dict(response.headers)))
        return secret

    def connect_all(self, who: str = "admin") -> None:
        for provider in PROVIDERS:
            body = {"token": self.tokens[provider], "extra": extra_for(provider)}
            response = self.api("POST", f"/api/integrations/{provider}/connect/", who, json=body)
            if response.status_code != 200:
                raise RuntimeError(f"connect {provider}: {response.status_code} {response.text}")

    def bulk(self, count: int, tag: str) -> list[int]:
        providers = ["whatsapp", "sendgrid", "telegram", "instagram"]
        to = {
            "whatsapp": "+14155550100",
            "sendgrid": "ops@secorg.test",
            "telegram": "4242",
            "instagram": "1234567890",
        }
        items = []
        for i in range(count):
            provider = providers[i % 4]
            item = {"provider": provider, "to": to[provider], "body": f"{tag} {i}"}
            if provider == "sendgrid":
                item["subject"] = "Hello"
            items.append(item)
        response = self.api("POST", "/api/messages/bulk/", json={"messages": items})
        if response.status_code != 202:
            raise RuntimeError(f"bulk: {response.status_code} {response.text[:500]}")
        return [m["id"] for m in response.json()["messages"]]

    def db(self):
        return psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True)

    def statuses(self, ids: list[int]) -> dict[str, int]:
        with self.db() as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM shared_message WHERE id = ANY(%s) GROUP BY status",
                (ids,),
            ).fetchall()
        return dict(rows)

    def wait_done(self, ids: list[int], timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.statuses(ids)
            if counts.get("queued", 0) + counts.get("sending", 0) == 0:
                return counts
            if time.monotonic() > deadline:
                return counts
            time.sleep(0.5)

    def raw_request(
        self, method: str, path: str, body: bytes, headers: dict[str, str | bytes]
    ) -> tuple[int, str]:
        """One request with byte-exact headers and body (requests would re-encode them)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=120)
        try:
            conn.putrequest(method, path)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            status, text = response.status, response.read().decode(errors="replace")
        finally:
            conn.close()
        self.responses.append(text)
        return status, text

    def send_one(self, who: str, provider: str, to: str, body: str) -> int:
        item = {"provider": provider, "to": to, "body": body}
        if provider == "sendgrid":
            item["subject"] = "Hello"
        response = self.api("POST", "/api/messages/", who, json=item)
        if response.status_code != 202:
            raise RuntimeError(f"send {provider}: {response.status_code} {response.text[:300]}")
        return response.json()["message_id"]
