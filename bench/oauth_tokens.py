"""`python -m bench.oauth_tokens`: Google token calls per access-token lifetime.

Two worker processes sync bookings of one OAuth-connected Google Calendar through the sandbox
(50 ms per call). The sandbox's clock ends each access token's lifetime between waves
(POST /_sandbox/google/expire_tokens), so every wave starts with a token Google refuses (401)
and a stored expiry that still looks valid: the worst case. The table counts the calls to
Google's token endpoint per lifetime (before issue 14: one per task). Writes bench/OAUTH.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import redis
from cryptography.fernet import Fernet

from bench.common import PG, recreate_database, wait_for
from devtools import commands
from devtools.procs import ROOT, Procs
from sandbox.testing import SandboxProcess

DB_NAME = os.environ.get("OAUTH_BENCH_DB", "corbi_bench_oauth")
# A Redis db no other benchmark or test uses (pipeline: 12, 13; security: 11; tests: 6, 15).
REDIS_URL = os.environ.get("OAUTH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
CLIENT_ID = "corbi-bench.apps.googleusercontent.com"
CLIENT_SECRET = "bench-only-google-oauth-secret-0001"
REFRESH = "1//benchRefreshTokenOnlyForTheSandbox01"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.oauth_tokens", description=__doc__)
    parser.add_argument("--lifetimes", type=int, default=3, help="access-token lifetimes (3)")
    parser.add_argument("--syncs", type=int, default=100, help="booking syncs per lifetime (100)")
    parser.add_argument("--quick", action="store_true", help="print only, do not write OAUTH.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    recreate_database(DB_NAME)
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory(prefix="corbi-oauth-bench-") as tmp:
        procs = Procs(log_dir=Path(tmp))
        with SandboxProcess(procs=procs) as sandbox:
            try:
                rows = run(args, procs, sandbox)
            finally:
                procs.stop_all()
    report = table(args, rows)
    print(report)
    if not args.quick:
        (ROOT / "bench" / "OAUTH.md").write_text(report)
    return 0 if all(calls <= 1 for _, _, calls, _ in rows) else 1


def run(args: argparse.Namespace, procs: Procs, sandbox: SandboxProcess) -> list[tuple]:
    env = commands.stack_env(
        fernet_key=Fernet.generate_key().decode(),
        database_url=f"{PG}/{DB_NAME}",
        redis_url=REDIS_URL,
        sandbox_url=sandbox.url,
        GOOGLE_OAUTH_CLIENT_ID=CLIENT_ID,
        GOOGLE_OAUTH_CLIENT_SECRET=CLIENT_SECRET,
        LOG_LEVEL="WARNING",
    )
    os.environ.update(env)
    import django

    django.setup()
    import logging

    from django.core.management import call_command

    logging.getLogger("corbi.audit").setLevel(logging.WARNING)  # keep stdout for the table

    from shared.models import Booking, Organization
    from shared.services.bookings import booking_upsert
    from shared.services.integrations import integration_oauth_connect

    call_command("migrate", "--noinput", verbosity=0)
    org = Organization.objects.create(name="Bench", slug="bench-oauth")
    client = sandbox.client
    client.add_account(
        "google_calendar", refresh_token=REFRESH, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    client.configure(latency_ms=50)
    integration_oauth_connect(organization=org, provider="google_calendar", token=REFRESH, extra={})
    for name in ("w1", "w2"):
        argv = commands.celery_worker(f"{name}@oauth-bench", pool="threads", concurrency=8)
        procs.start(name, argv, env)
    rows = []
    for lifetime in range(1, args.lifetimes + 1):
        if lifetime > 1:
            client.google_expire_tokens()  # Google ends the token's lifetime now
        since = max((r["seq"] for r in client.requests()), default=0)
        started = time.monotonic()
        ids = [
            booking_upsert(
                organization=org,
                booking_id=f"l{lifetime}-{i}",
                data={
                    "summary": f"Bench {i}",
                    "start": "2030-01-01T10:00:00Z",
                    "end": "2030-01-01T11:00:00Z",
                },
            ).pk
            for i in range(args.syncs)
        ]
        wait_for(
            lambda ids=ids: Booking.objects.filter(pk__in=ids, status="synced").count() == len(ids),
            180,
            f"lifetime {lifetime} synced",
            interval=0.2,
        )
        calls = len(client.token_calls(since=since))
        unauthorized = sum(
            1
            for r in client.requests("google_calendar", since=since)
            if r["path"].startswith("/calendar/") and r["status"] == 401
        )
        rows.append((lifetime, len(ids), calls, unauthorized, time.monotonic() - started))
    return [(lt, n, calls, unauth) for lt, n, calls, unauth, _ in rows]


def table(args: argparse.Namespace, rows: list[tuple]) -> str:
    lines = [
        "# Google token calls per access-token lifetime",
        "",
        f"`python -m bench.oauth_tokens --lifetimes {args.lifetimes} --syncs {args.syncs}`: two "
        "worker processes (8 threads each), one OAuth-connected calendar, sandbox at 50 ms; "
        "each lifetime after the first starts with the token expired at Google only (401).",
        "",
        "| lifetime | booking syncs | token endpoint calls | calendar 401s | target |",
        "|---|---|---|---|---|",
    ]
    for lifetime, syncs, calls, unauthorized in rows:
        lines.append(f"| {lifetime} | {syncs} | {calls} | {unauthorized} | ≤ 1 call |")
    total_syncs = sum(r[1] for r in rows)
    total_calls = sum(r[2] for r in rows)
    lines += [
        "",
        f"{total_calls} token call(s) for {total_syncs} syncs over {len(rows)} lifetimes "
        f"(one per task before: {total_syncs}).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
