"""In-process cost of one POST /api/messages/ against GET /api/integrations/ (issue 13).

`python -m bench.enqueue_profile [--n 300] [--profile]`: Django in this process on its own
database (ENQ_PROFILE_DB, default corbi_enq_prof) and Redis db (ENQ_PROFILE_REDIS_URL, default
db 14), a bench org with a Telegram integration, then `n` POSTs of single Telegram messages and
`n` GETs through django.test.Client (no network, no worker). Prints ms per request and the
ratio; --profile prints a cProfile of the POSTs by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections.abc import Callable

from cryptography.fernet import Fernet

from bench.common import PG, recreate_database

DB_NAME = os.environ.get("ENQ_PROFILE_DB", "corbi_enq_prof")
REDIS_URL = os.environ.get("ENQ_PROFILE_REDIS_URL", "redis://127.0.0.1:6379/14")
TOKEN = "7000001:benchBENCHbench_token_0123456789abcdef"


def setup() -> tuple[dict[str, str], int]:
    """A fresh database, migrated, with one admin and a Telegram integration: (headers, org)."""
    os.environ.update(
        {
            "CORBI_DOTENV": "0",
            "DJANGO_SETTINGS_MODULE": "corbi.settings",
            "DATABASE_URL": f"{PG}/{DB_NAME}",
            "REDIS_URL": REDIS_URL,
            "FERNET_KEY": os.environ.get("FERNET_KEY") or Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
        }
    )
    recreate_database(DB_NAME)
    import django

    django.setup()
    from django.core.management import call_command

    from shared.crypto import encrypt_token
    from shared.models import Integration
    from tests.factories import make_member

    call_command("migrate", "--noinput", "-v", "0")
    member = make_member("bench", "bench", "admin")
    Integration.objects.create(
        organization=member.org,
        provider="telegram",
        token_encrypted=encrypt_token(TOKEN),
        is_active=True,
    )
    headers = {"HTTP_AUTHORIZATION": f"Token {member.token}", "HTTP_X_ORG_ID": str(member.org.pk)}
    return headers, member.org.pk


def timed(n: int, call: Callable[[int], None]) -> tuple[float, float]:
    """(wall ms, this process's CPU ms) per call of `call(i)` over `n` calls."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        call(i)
    return (time.perf_counter() - t0) / n * 1000, (time.process_time() - c0) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    headers, _ = setup()
    import redis
    from django.test import Client

    client = Client()
    seq = iter(range(10**9))

    def post(_: int) -> None:
        body = {"provider": "telegram", "to": str(1_000_000 + next(seq)), "body": "bench"}
        r = client.post("/api/messages/", body, content_type="application/json", **headers)
        assert r.status_code == 202, (r.status_code, r.content[:300])

    def get(_: int) -> None:
        r = client.get("/api/integrations/", **headers)
        assert r.status_code == 200, (r.status_code, r.content[:300])

    timed(30, post)
    timed(30, get)
    best_post = best_get = (float("inf"), float("inf"))
    for _ in range(args.rounds):  # the best round of each: the machine may be shared
        best_post = min(best_post, timed(args.n, post))
        best_get = min(best_get, timed(args.n, get))
    print(
        f"POST /api/messages/ {best_post[0]:.2f} ms (CPU {best_post[1]:.2f}), "
        f"GET /api/integrations/ {best_get[0]:.2f} ms (CPU {best_get[1]:.2f}), "
        f"ratio (POST throughput / GET throughput) {best_get[0] / best_post[0]:.2f}"
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        timed(args.n, post)
        profiler.disable()
        profiler.dump_stats("/tmp/enq.prof")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    redis.Redis.from_url(REDIS_URL).flushdb()


if __name__ == "__main__":
    main()
