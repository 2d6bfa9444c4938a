"""Every process of the chaos run, on devtools.procs: its own Redis, the sandbox, web, workers, beat."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import redis
from cryptography.fernet import Fernet

from bench.chaos.config import DB_NAME, LATENCY_MS, LOG_DIR, SETTINGS_ENV, log
from bench.common import PG
from devtools import commands
from devtools.procs import Proc, Procs, free_port
from sandbox.testing import SandboxProcess


class Stack:
    """The run's processes; a worker or beat exit the harness did not cause is recorded."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.procs = Procs(log_dir=LOG_DIR)
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis_proc: Proc | None = None
        self.redis_dir = LOG_DIR / "redis-data"
        self.workers: dict[str, Proc] = {}
        self.worker_starts: Counter[str] = Counter()
        self.beat: Proc | None = None
        # a worker or beat that exits without the harness stopping it: recorded, never
        # replaced, and the run fails
        self.unexpected_exits: list[dict] = []
        self.watching = threading.Event()
        self.sandbox_url = ""
        self.web = ""
        self.env: dict[str, str] = {}

    # redis -------------------------------------------------------------------------------
    def start_redis(self) -> None:
        """redis-server on our own port; it loads redis-data/dump.rdb when one was left there."""
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self.redis_proc = self.procs.start(
            "redis", commands.redis_server(self.redis_port, self.redis_dir)
        )
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=0.5)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        self.procs.wait_ready(self.redis_proc, up, 20, "redis-server", interval=0.05)

    def stop_redis(self, *, keep_data: bool) -> None:
        """SHUTDOWN SAVE (Redis comes back with its data), or kill -9 with nothing on disk."""
        assert self.redis_proc is not None
        proc, self.redis_proc = self.redis_proc, None
        if keep_data:
            redis.Redis.from_url(self.redis_url, socket_timeout=30).shutdown(save=True)
            proc.wait(timeout=30)
            self.procs.stop(proc)  # reaps it and forgets it
        else:
            self.procs.kill(proc)
            (self.redis_dir / "dump.rdb").unlink(missing_ok=True)

    def restart_redis(self, down_seconds: float, *, keep_data: bool = False) -> None:
        self.stop_redis(keep_data=keep_data)
        time.sleep(down_seconds)
        self.start_redis()

    # sandbox, env, web -------------------------------------------------------------------
    def start_sandbox(self) -> None:
        sandbox = SandboxProcess(
            latency_ms=LATENCY_MS,
            startup_timeout=30,
            procs=self.procs,
            log=LOG_DIR / "sandbox.log",
        )
        self.sandbox_url = sandbox.__enter__().url  # stopped with the others by procs.stop_all

    def make_env(self) -> dict[str, str]:
        self.env = commands.stack_env(
            fernet_key=Fernet.generate_key().decode(),
            database_url=f"{PG}/{DB_NAME}",
            redis_url=self.redis_url,
            sandbox_url=self.sandbox_url,
            **SETTINGS_ENV,
        )
        for name in ("CELERY_BROKER_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            self.env.pop(name, None)
        return self.env

    def start_web(self) -> None:
        port = free_port()
        argv = commands.gunicorn(port, "--timeout", "60", "--log-level", "warning")
        proc = self.procs.start("gunicorn", argv, self.env)
        self.web = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            return commands.http_status(self.web + "/health/", timeout=3) is not None

        self.procs.wait_ready(proc, answers, 60, "gunicorn", interval=0.2)

    # workers and beat --------------------------------------------------------------------
    def start_worker(self, name: str, env: dict[str, str] | None = None) -> Proc:
        self.worker_starts[name] += 1
        argv = commands.celery_worker(
            f"{name}@chaos", *commands.ISOLATED, pool="threads", concurrency=32
        )
        proc = self.procs.start(f"worker-{name}", argv, {**self.env, **(env or {})})
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str, *, env: dict[str, str] | None = None) -> Proc:
        """kill -9 a worker (an expected exit) and start a new one under the same name."""
        self.check_processes()  # a worker that already died on its own stays unexpected
        proc = self.workers[name]
        self.procs.kill(proc)
        self.start_worker(name, env)
        return proc

    def stop_worker(self, name: str) -> None:
        self.check_processes()
        self.procs.stop(self.workers.pop(name))

    def start_beat(self) -> None:
        for path in LOG_DIR.glob("beat-schedule*"):
            path.unlink()
        argv = commands.celery_beat(LOG_DIR / "beat-schedule")
        self.beat = self.procs.start("beat", argv, self.env)

    def check_processes(self) -> None:
        """Record every worker or beat that exited without the harness stopping it."""
        watched = [*self.workers.values(), self.beat]
        for proc in self.procs.unexpected_exits():
            if proc not in watched or any(e["pid"] == proc.pid for e in self.unexpected_exits):
                continue
            name = "beat" if proc is self.beat else proc.name.removeprefix("worker-")
            self.unexpected_exits.append(
                {"time": time.time(), "name": name, "pid": proc.pid, "rc": proc.returncode}
            )
            log(f"UNEXPECTED EXIT: {name} pid {proc.pid} rc {proc.returncode} (not replaced)")

    def watch(self) -> None:
        """Check the workers and beat every 0.2 s until the run ends (a background thread)."""

        def loop() -> None:
            while not self.watching.wait(0.2):
                self.check_processes()

        threading.Thread(target=loop, daemon=True).start()

    def any_worker_alive(self) -> bool:
        return any(proc.poll() is None for proc in self.workers.values())


def setup_django(env: dict[str, str]) -> None:
    for key in ("DJANGO_SETTINGS_MODULE", "CORBI_DOTENV", "FERNET_KEY", "DATABASE_URL"):
        os.environ[key] = env[key]
    for key in ("REDIS_URL", "PROVIDER_SANDBOX_URL", "NO_PROXY", "no_proxy", *SETTINGS_ENV):
        os.environ[key] = env[key]
    os.environ["LOG_LEVEL"] = "WARNING"  # this process only
    import django

    django.setup()
