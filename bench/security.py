"""make security: schemathesis, a canary sweep, key rotation under traffic and check --deploy.

Runs a real stack on loopback (sandbox, gunicorn, a worker, beat, Flower) against its own
database `corbi_security` and Redis db 11, prints a Markdown table, writes bench/SECURITY.md
and exits non-zero when a target is missed.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import secrets
import string
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis
import requests
from cryptography.fernet import Fernet

from bench.security_procs import ROOT, Procs, free_port, http_ok, wait_for
from sandbox.testing import SandboxProcess

DB_NAME = "corbi_security"
PG = "postgres://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/11"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
PROVIDERS = ["whatsapp", "sendgrid", "telegram", "instagram", "google_calendar"]
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
FROM_WHATSAPP = "+14155238886"
IG_ID = "17841400000000001"
CIPHERTEXT = ("shared_integration", "token_encrypted")
ROTATION_MESSAGES = 300
EXAMPLES = int(os.environ.get("SECURITY_MAX_EXAMPLES", "12"))


def _rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def make_canaries() -> dict[str, str]:
    """Fresh, recognisable provider tokens for this run (valid shapes for every provider)."""
    return {
        "whatsapp": "cnry" + _rand(28),
        "sendgrid": f"SG.cnry{_rand(18)}.{_rand(43)}",
        "sendgrid_rotated": f"SG.cnry{_rand(18)}.{_rand(43)}",
        "telegram": f"{secrets.randbelow(10**9) + 10**9}:cnry{_rand(31)}",
        "instagram": "IGAAcnry" + _rand(30),
        "google_calendar": "ya29.cnry" + _rand(40),
    }


def fragments(secret: str, size: int = 8) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def count_leaks(text: str, tokens: dict[str, str]) -> int:
    """Occurrences of any token fragment (8 chars); a whole token counts once per fragment."""
    hits = 0
    for token in tokens.values():
        for frag in set(fragments(token)):
            hits += text.count(frag)
    return hits


def extra_for(provider: str) -> dict:
    return {
        "whatsapp": {"account_sid": ACCOUNT_SID, "from_whatsapp": FROM_WHATSAPP},
        "sendgrid": {"from_email": "noreply@secorg.test", "rate_limit_per_second": 1000},
        "telegram": {"rate_limit_per_second": 1000},
        "instagram": {"instagram_scoped_id": IG_ID, "rate_limit_per_second": 1000},
        "google_calendar": {},
    }[provider]


def sandbox_accounts(tokens: dict[str, str]) -> list[dict]:
    return [
        {
            "provider": "whatsapp",
            "account_sid": ACCOUNT_SID,
            "auth_token": tokens["whatsapp"],
            "senders": ["whatsapp:" + FROM_WHATSAPP],
        },
        {"provider": "sendgrid", "api_key": tokens["sendgrid"]},
        {"provider": "sendgrid", "api_key": tokens["sendgrid_rotated"]},
        {"provider": "telegram", "token": tokens["telegram"]},
        {"provider": "instagram", "access_token": tokens["instagram"], "ig_id": IG_ID},
        {"provider": "google_calendar", "access_token": tokens["google_calendar"]},
    ]


class Run:
    """One security run: the stack, the collected evidence and the results table."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs = Procs(work)
        self.tokens = make_canaries()
        self.old_key = Fernet.generate_key().decode()
        self.new_key = Fernet.generate_key().decode()
        self.responses: list[str] = []  # bodies and headers of every response we collected
        self.rows: list[tuple[str, str, str, bool]] = []  # (measure, value, target, ok)
        self.sweep: list[tuple[str, int, int]] = []
        self.findings: list[str] = []
        self.notes: set[str] = set()
        self.web_port = free_port()
        self.flower_port = free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.sandbox: SandboxProcess | None = None
        self.redis = redis.Redis.from_url(REDIS_URL)

    # --- environment and processes ------------------------------------------------------------

    def env(self, fernet: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "corbi.settings",
                "CORBI_DOTENV": "0",
                "FERNET_KEY": fernet or self.old_key,
                "DATABASE_URL": f"{PG}/{DB_NAME}",
                "REDIS_URL": REDIS_URL,
                "PROVIDER_SANDBOX_URL": self.sandbox.url if self.sandbox else "",
                "LOG_LEVEL": "DEBUG",
                "PROVIDER_TIMEOUT_SECONDS": "5",
                "TEST_CONNECTION_TIMEOUT_SECONDS": "5",
                "SWEEPER_INTERVAL_SECONDS": "2",
                "SWEEPER_GRACE_SECONDS": "10",
                "DELIVERY_LEASE_SECONDS": "20",
                "DELIVERY_BACKOFF_BASE_SECONDS": "0.3",
                "RATE_LIMIT_TELEGRAM_CHAT": "1000",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        return env

    def manage(self, *args: str, fernet: str | None = None, env: dict | None = None):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env or self.env(fernet),
            capture_output=True,
            text=True,
            timeout=180,
        )

    def start_web(self, fernet: str) -> None:
        self.procs.start(
            "web",
            [
                "-m",
                "gunicorn",
                "corbi.wsgi",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "60",
                "--access-logfile",
                "-",
                "--log-level",
                "debug",
            ],
            self.env(fernet),
        )
        wait_for(lambda: http_ok(self.base + "/health/"), 60, "gunicorn")

    def start_worker(self, fernet: str) -> None:
        proc = self.procs.start(
            "worker",
            [
                "-m",
                "celery",
                "-A",
                "corbi",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "16",
                "--loglevel",
                "DEBUG",
                "--hostname",
                f"sec{self.procs.generation}@bench",
            ],
            self.env(fernet),
        )
        log = self.procs.logs[-1]

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError("worker exited: " + log.read_text(errors="replace")[-1500:])
            return "ready." in log.read_text(errors="replace")

        wait_for(ready, 60, "worker ready")

    def start_stack(self) -> None:
        self.sandbox = SandboxProcess().__enter__()
        self.sandbox.client.add_accounts(sandbox_accounts(self.tokens))
        self.sandbox.client.configure(telegram_chat_rate=1000, telegram_bot_rate=1000)
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        self.redis.flushdb()
        result = self.manage("migrate", "--noinput")
        if result.returncode:
            raise RuntimeError("migrate failed: " + result.stderr[-2000:])
        self.people = {}
        for key, org, user, role in (
            ("admin", "secorg", "sec-admin", "admin"),
            ("member", "secorg", "sec-member", "member"),
            ("outsider", "otherorg", "sec-outsider", "admin"),
        ):
            out = self.manage("create_member", "--org", org, "--username", user, "--role", role)
            self.people[key] = json.loads(out.stdout.strip().splitlines()[-1])
        self.start_web(self.old_key)
        self.start_worker(self.old_key)
        self.procs.start(
            "beat",
            [
                "-m",
                "celery",
                "-A",
                "corbi",
                "beat",
                "--loglevel",
                "DEBUG",
                "--schedule",
                str(self.work / "beat-schedule"),
            ],
            self.env(self.old_key),
        )
        self.procs.start(
            "flower",
            [
                "-m",
                "celery",
                "-A",
                "corbi",
                "flower",
                "--address=127.0.0.1",
                f"--port={self.flower_port}",
                "--basic-auth=u:p",
            ],
            self.env(self.old_key),
        )
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{self.flower_port}/api/tasks", auth=("u", "p")),
            60,
            "flower",
        )

    # --- HTTP ---------------------------------------------------------------------------------

    def headers(self, who: str, org: str | None = None) -> dict[str, str]:
        person = self.people[who]
        return {
            "Authorization": f"Token {person['token']}",
            "X-Org-ID": str(org or person["org_id"]),
        }

    def api(self, method: str, path: str, who: str = "admin", **kwargs) -> requests.Response:
        response = requests.request(
            method, self.base + path, headers=self.headers(who), timeout=30, **kwargs
        )
        self.responses.append(f"{dict(response.headers)}\n{response.text}")
        return response

    def connect_all(self, who: str = "admin") -> None:
        for provider in PROVIDERS:
            body = {"token": self.tokens[provider], "extra": extra_for(provider)}
            response = self.api("POST", f"/api/integrations/{provider}/connect/", who, json=body)
            if response.status_code != 200:
                raise RuntimeError(f"connect {provider}: {response.status_code} {response.text}")

    # --- schemathesis -------------------------------------------------------------------------

    def schemathesis(self, label: str, headers: dict[str, str], mode: str) -> dict:
        report = self.work / f"st-{label}"
        har = report / "har.json"
        cmd = [
            SCHEMATHESIS,
            "run",
            self.base + "/api/schema/",
            "--url",
            self.base,
            "--mode",
            mode,
            "--max-examples",
            str(EXAMPLES),
            "--phases",
            "examples,coverage,fuzzing",
            "--checks",
            "all",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--seed",
            "4242",
            "--suppress-health-check",
            "all",
            "--report",
            "har,junit",
            "--report-dir",
            str(report),
            "--report-har-path",
            str(har),
        ]
        for name, value in headers.items():
            cmd += ["-H", f"{name}: {value}"]
        started = time.monotonic()
        result = subprocess.run(
            cmd, cwd=self.work, capture_output=True, text=True, timeout=600, env=self.env()
        )
        (self.work / f"st-{label}.out").write_text(result.stdout + result.stderr)
        statuses: dict[int, int] = {}
        answers: list[tuple[int, str, str]] = []
        entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
        for entry in entries:
            code = entry["response"]["status"]
            statuses[code] = statuses.get(code, 0) + 1
            where = f"{entry['request']['method']} {entry['request']['url']}"
            answers.append((code, entry["response"].get("content", {}).get("text") or "", where))
            self.responses.append(
                json.dumps(entry["response"].get("headers", []))
                + (entry["response"].get("content", {}).get("text") or "")
            )
            if code >= 500:
                self.findings.append(
                    f"{label}: {code} on {entry['request']['method']} {entry['request']['url']}"
                    f" body={str(entry['request'].get('postData', {}).get('text', ''))[:300]!r}"
                )
        cases = len(entries)
        match = re.search(r"Test cases:\s*(\d+) generated", result.stdout)
        generated = int(match.group(1)) if match else cases
        schema_failures = len(re.findall(r"Response violates schema", result.stdout))
        return {
            "label": label,
            "cases": generated,
            "requests": cases,
            "statuses": statuses,
            "answers": answers,
            "server_errors": sum(n for code, n in statuses.items() if code >= 500),
            "schema_violations": schema_failures,
            "exit": result.returncode,
            "seconds": time.monotonic() - started,
            "summary": result.stdout[-1500:],
        }

    def run_schemathesis(self) -> None:
        admin, member, outsider = (self.headers(w) for w in ("admin", "member", "outsider"))
        runs = [
            self.schemathesis("admin-positive", admin, "positive"),
            self.schemathesis("admin-negative", admin, "negative"),
            self.schemathesis("member-positive", member, "positive"),
            self.schemathesis("member-negative", member, "negative"),
            self.schemathesis(
                "anonymous", {"X-Org-ID": str(self.people["admin"]["org_id"])}, "all"
            ),
            self.schemathesis(
                "outsider",
                {**outsider, "X-Org-ID": str(self.people["admin"]["org_id"])},
                "all",
            ),
        ]
        self.st_runs = runs
        total = sum(r["cases"] for r in runs)
        errors = sum(r["server_errors"] for r in runs)
        violations = sum(r["schema_violations"] for r in runs)
        bypasses = others = 0
        for run in runs:
            if run["label"] not in ("anonymous", "outsider"):
                continue
            for status, text, where in run["answers"]:
                if status in (401, 404):
                    continue
                # A 400 for a missing/malformed X-Org-ID is decided before any org is looked up.
                if status == 400 and "X-Org-ID" in text:
                    others += 1
                    self.notes.add(f"{run['label']}: 400 {text[:120]} ({where})")
                    continue
                bypasses += 1
                self.findings.append(f"{run['label']} got {status} on {where}: {text[:200]}")
        for run in runs:
            shown = ", ".join(f"{c}: {n}" for c, n in sorted(run["statuses"].items()))
            self.rows.append(
                (
                    f"schemathesis {run['label']}",
                    f"{run['cases']} cases, {run['requests']} requests ({shown}), "
                    f"{run['seconds']:.0f} s",
                    "—",
                    True,
                )
            )
        self.rows.append(("schemathesis generated cases", str(total), "≥ 1000", total >= 1000))
        self.rows.append(("server errors (5xx)", str(errors), "0", errors == 0))
        self.rows.append(("responses violating the schema", str(violations), "0", violations == 0))
        self.rows.append(
            (
                "auth bypasses (anonymous/outsider answered anything but 401/404; "
                "400 for a malformed X-Org-ID counted apart)",
                f"{bypasses} (+ {others} answers 400 for X-Org-ID)",
                "0",
                bypasses == 0,
            )
        )

    # --- delivery, rotation -------------------------------------------------------------------

    def bulk(self, count: int, tag: str) -> list[int]:
        providers = ["whatsapp", "sendgrid", "telegram", "instagram"]
        to = {
            "whatsapp": "+15551234567",
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

    def delivery_run(self) -> None:
        self.connect_all()
        ids = self.bulk(40, "delivery")
        counts = self.wait_done(ids, 120)
        self.rows.append(
            ("delivery run through a worker (40 messages)", str(counts), "all sent", True)
        )

    def rotation(self) -> None:
        ids = self.bulk(ROTATION_MESSAGES, "rotation")
        both = f"{self.new_key},{self.old_key}"
        time.sleep(1.0)
        # 1. web and worker learn the new key (it encrypts; the old one still decrypts).
        self.procs.stop("worker")
        self.start_worker(both)
        self.procs.stop("web")
        self.start_web(both)
        # 2. a connect during the rotation must not be overwritten with a stale token.
        expected = dict(self.tokens)
        body = {"token": self.tokens["sendgrid_rotated"], "extra": extra_for("sendgrid")}
        reconnect = self.api("POST", "/api/integrations/sendgrid/connect/", json=body)
        expected["sendgrid"] = self.tokens["sendgrid_rotated"]
        rotate = self.manage("rotate_fernet_keys", fernet=both)
        # 3. the old key is dropped.
        self.procs.stop("worker")
        self.start_worker(self.new_key)
        self.procs.stop("web")
        self.start_web(self.new_key)
        counts = self.wait_done(ids, 180)
        with self.db() as conn:
            failed = conn.execute(
                "SELECT count(*) FROM shared_message WHERE id = ANY(%s) AND status = 'failed' "
                "AND (error_kind = 'credentials' OR last_error ILIKE '%%decrypt%%')",
                (ids,),
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT i.provider, i.token_encrypted FROM shared_integration i "
                "JOIN shared_organization o ON o.id = i.organization_id WHERE o.slug = 'secorg'"
            ).fetchall()
        fernet = Fernet(self.new_key)
        stale = 0
        for provider, ciphertext in rows:
            try:
                token = fernet.decrypt(ciphertext.encode()).decode()
            except Exception:
                stale += 1
                continue
            if token != expected[provider]:
                stale += 1
        lost = counts.get("queued", 0) + counts.get("sending", 0) + stale
        self.rows.append(
            (
                f"rotation: {ROTATION_MESSAGES} messages during new,old → rotate → new",
                f"{counts}; rotate said: {rotate.stdout.strip()} (exit {rotate.returncode}); "
                f"reconnect during rotation {reconnect.status_code}",
                "all sent",
                counts.get("sent", 0) == ROTATION_MESSAGES,
            )
        )
        self.rows.append(("rotation: decrypt failures", str(failed), "0", failed == 0))
        self.rows.append(
            (
                "rotation: lost updates (undelivered + tokens not under the new key/stale)",
                str(lost),
                "0",
                lost == 0,
            )
        )

    # --- canary sweep -------------------------------------------------------------------------

    def redis_dump(self) -> str:
        parts = []
        for key in self.redis.scan_iter(count=1000):
            kind = self.redis.type(key).decode()
            if kind == "string":
                value = [self.redis.get(key)]
            elif kind == "list":
                value = self.redis.lrange(key, 0, -1)
            elif kind == "hash":
                value = [b"%s=%s" % kv for kv in self.redis.hgetall(key).items()]
            elif kind == "set":
                value = list(self.redis.smembers(key))
            elif kind == "zset":
                value = [m for m, _ in self.redis.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                value = [repr(e).encode() for e in self.redis.xrange(key)]
            else:
                value = []
            parts.append(key.decode(errors="replace"))
            for item in value:
                text = (item or b"").decode(errors="replace")
                parts.append(text)
                parts.extend(_decoded_bodies(text))
        return "\n".join(parts)

    def db_dump(self) -> str:
        parts = []
        with self.db() as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
            ]
            for table in tables:
                cols = [
                    r[0]
                    for r in conn.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = 'public' AND table_name = %s",
                        (table,),
                    ).fetchall()
                    if (table, r[0]) != CIPHERTEXT
                ]
                if not cols:
                    continue
                select = ", ".join(f'CAST("{c}" AS TEXT)' for c in cols)
                for row in conn.execute(f'SELECT {select} FROM "{table}"').fetchall():
                    parts.append(table + ": " + " | ".join("" if v is None else v for v in row))
        return "\n".join(parts)

    def canary_sweep(self) -> None:
        metrics = requests.get(self.base + "/metrics", timeout=10).text
        flower = requests.get(
            f"http://127.0.0.1:{self.flower_port}/api/tasks", auth=("u", "p"), timeout=20
        ).text
        places = {
            "API responses (bodies + headers, incl. schemathesis HAR)": "\n".join(self.responses),
            "process logs (web, worker, beat, flower; DEBUG)": self.procs.log_text(),
            "schemathesis console output": "\n".join(
                p.read_text(errors="replace") for p in self.work.glob("st-*.out")
            ),
            "Redis (every key and value, broker bodies decoded)": self.redis_dump(),
            "GET /metrics": metrics,
            "Flower GET /api/tasks": flower,
            "database (every column except the ciphertext)": self.db_dump(),
        }
        total = 0
        for place, text in places.items():
            hits = count_leaks(text, self.tokens)
            total += hits
            self.sweep.append((place, len(text.encode()), hits))
        self.rows.append(("canary sweep: token fragments found", str(total), "0", total == 0))

    # --- check --deploy -----------------------------------------------------------------------

    def check_deploy(self) -> None:
        env = self.env(self.new_key)
        env.update(
            {
                "DJANGO_ENV": "production",
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
                "DEBUG": "false",
                "SECURE_SSL_REDIRECT": "true",
                "SESSION_COOKIE_SECURE": "true",
                "CSRF_COOKIE_SECURE": "true",
                "SECURE_HSTS_SECONDS": "31536000",
                "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
                "SECURE_HSTS_PRELOAD": "true",
                "LOG_LEVEL": "WARNING",
            }
        )
        result = self.manage("check", "--deploy", env=env)
        warnings = re.findall(r"\(([a-z_]+\.[WE]\d+)\)", result.stdout + result.stderr)
        self.deploy_output = (result.stdout + result.stderr).strip()
        self.rows.append(
            (
                "manage.py check --deploy (production settings)",
                ", ".join(warnings) or f"no issues (exit {result.returncode})",
                "none",
                not warnings and result.returncode == 0,
            )
        )

    # --- report -------------------------------------------------------------------------------

    def markdown(self) -> str:
        lines = [
            "# Security run",
            "",
            f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
            f"- uname: {' '.join(platform.uname())}",
            f"- schemathesis: {EXAMPLES} examples per operation, phases examples, coverage, "
            "fuzzing, checks all",
            "",
            "| measure | value | target | ok |",
            "|---|---|---|---|",
        ]
        lines += [f"| {m} | {v} | {t} | {'yes' if ok else '**NO**'} |" for m, v, t, ok in self.rows]
        lines += [
            "",
            "## Canary sweep",
            "",
            "| place | bytes scanned | occurrences |",
            "|---|---|---|",
        ]
        lines += [f"| {p} | {b:,} | {n} |" for p, b, n in self.sweep]
        if self.findings:
            lines += ["", "## Server errors found", ""]
            lines += [f"- `{f}`" for f in self.findings[:30]]
        if self.notes:
            lines += ["", "## Answers other than 401/404 to anonymous/outsider (not bypasses)", ""]
            lines += [f"- `{n}`" for n in sorted(self.notes)[:20]]
        if getattr(self, "deploy_output", ""):
            lines += ["", "## check --deploy output", "", "```", self.deploy_output, "```"]
        return "\n".join(lines) + "\n"


def _decoded_bodies(text: str) -> list[str]:
    """Kombu messages keep the task body base64-encoded: decode it so the sweep sees it."""
    try:
        message = json.loads(text)
    except ValueError:
        return []
    if isinstance(message, list) and message and isinstance(message[0], str):
        try:
            message = json.loads(message[0])
        except ValueError:
            return []
    if not isinstance(message, dict) or "body" not in message:
        return []
    try:
        return [base64.b64decode(message["body"]).decode(errors="replace")]
    except (ValueError, TypeError):
        return []


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="corbi-security-") as tmp:
        run = Run(Path(tmp))
        failed_step = ""
        try:
            run.start_stack()
            run.connect_all()
            run.connect_all("outsider")
            run.run_schemathesis()
            run.delivery_run()
            run.rotation()
            run.canary_sweep()
            run.check_deploy()
        except Exception as exc:
            failed_step = f"{type(exc).__name__}: {exc}"
            run.rows.append(("run completed", failed_step[:300], "no error", False))
        finally:
            run.procs.stop_all()
            if run.sandbox is not None:
                run.sandbox.__exit__(None, None, None)
        report = run.markdown()
    print(report)
    (ROOT / "bench" / "SECURITY.md").write_text(report)
    return 0 if all(ok for *_, ok in run.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
