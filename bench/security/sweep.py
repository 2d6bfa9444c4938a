"""The canary sweep over every place a token could end up, and `check --deploy`."""

from __future__ import annotations

import re
import secrets

import requests

from bench.security.canaries import count_encoded_leaks, count_leaks, decoded_bodies
from bench.security.config import CIPHERTEXT
from bench.security.harness import Run


def redis_dump(run: Run) -> str:
    parts = []
    for key in run.redis.scan_iter(count=1000):
        kind = run.redis.type(key).decode()
        if kind == "string":
            value = [run.redis.get(key)]
        elif kind == "list":
            value = run.redis.lrange(key, 0, -1)
        elif kind == "hash":
            value = [b"%s=%s" % kv for kv in run.redis.hgetall(key).items()]
        elif kind == "set":
            value = list(run.redis.smembers(key))
        elif kind == "zset":
            value = [m for m, _ in run.redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            value = [repr(e).encode() for e in run.redis.xrange(key)]
        else:
            value = []
        parts.append(key.decode(errors="replace"))
        for item in value:
            text = (item or b"").decode(errors="replace")
            parts.append(text)
            parts.extend(decoded_bodies(text))
    return "\n".join(parts)


def db_dump(run: Run) -> str:
    parts = []
    with run.db() as conn:
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
                if (table, r[0]) not in CIPHERTEXT
            ]
            if not cols:
                continue
            select = ", ".join(f'CAST("{c}" AS TEXT)' for c in cols)
            for row in conn.execute(f'SELECT {select} FROM "{table}"').fetchall():
                parts.append(table + ": " + " | ".join("" if v is None else v for v in row))
    return "\n".join(parts)


def canary_sweep(run: Run) -> None:
    metrics = requests.get(run.base + "/metrics", timeout=10).text
    flower = requests.get(
        f"http://127.0.0.1:{run.flower_port}/api/tasks", auth=("u", "p"), timeout=20
    ).text
    places = {
        "API responses (bodies + headers, incl. schemathesis HAR)": "\n".join(run.responses),
        "process logs (web, worker, beat, flower; DEBUG)": run.procs.log_text(),
        "schemathesis console output": "\n".join(
            p.read_text(errors="replace") for p in run.work.glob("st-*.out")
        ),
        "Redis (every key and value, broker bodies decoded)": redis_dump(run),
        "GET /metrics": metrics,
        "Flower GET /api/tasks": flower,
        "database (every column except the ciphertexts)": db_dump(run),
        "event deliveries received (headers + bodies)": run.receiver.text(),
    }
    total = encoded = 0
    for place, text in places.items():
        hits, hidden = count_leaks(text, run.tokens), count_encoded_leaks(text, run.tokens)
        total += hits
        encoded += hidden
        run.sweep.append((place, len(text.encode()), hits, hidden))
        if hits or hidden:
            names = [name for name, token in run.tokens.items() if count_leaks(text, {0: token})]
            run.findings.append(f"canaries in {place}: {', '.join(names) or 'encoded only'}")
    secrets = [name for name in run.tokens if name.startswith("whsec")]
    run.rows.append(
        (
            "canaries swept: provider tokens, META_APP_SECRET, META_WEBHOOK_VERIFY_TOKEN and the "
            "`whsec_` secrets captured from create/rotate answers",
            f"{len(run.tokens)} canaries, {len(secrets)} of them `whsec_` secrets",
            "≥ 1 whsec_ (created and rotated)",
            len(secrets) >= 2,
        )
    )
    run.rows.append(("canary sweep: token fragments found", str(total), "0", total == 0))
    run.rows.append(
        (
            "canary sweep: fragments visible once percent/base64-decoded",
            str(encoded),
            "0",
            encoded == 0,
        )
    )


def check_deploy(run: Run) -> None:
    env = run.env(run.new_key)
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
    result = run.manage("check", "--deploy", env=env)
    warnings = re.findall(r"\(([a-z_]+\.[WE]\d+)\)", result.stdout + result.stderr)
    run.deploy_output = (result.stdout + result.stderr).strip()
    run.rows.append(
        (
            "manage.py check --deploy (production settings)",
            ", ".join(warnings) or f"no issues (exit {result.returncode})",
            "none",
            not warnings and result.returncode == 0,
        )
    )
