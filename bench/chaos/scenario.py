"""The main run's timeline: provider faults, a Redis restart and kill -9s at random moments."""

from __future__ import annotations

import random
import threading
import time

from bench.chaos.stack import Stack
from bench.chaos.workload import Events
from sandbox.testing import SandboxClient

FAULTS = {
    "outage_503": {"status": 503},
    "timeout": {"mode": "timeout"},
    "throttle_429": {"status": 429, "retry_after": 3},
}


def plan(quick: bool, pace: float) -> dict:
    if quick:
        return {
            "outage_503": ("whatsapp", 3.0, 20.0),
            "timeout": ("telegram", 6.0, 12.0),
            "throttle_429": ("instagram", 9.0, 12.0),
            "redis_restart_at": 14.0,
            "kills": 5,
            "kill_window": (2.0, min(40.0, pace + 15)),
        }
    return {
        "outage_503": ("whatsapp", 5.0, 60.0),
        "timeout": ("telegram", 15.0, 30.0),
        "throttle_429": ("instagram", 25.0, 30.0),
        "redis_restart_at": 40.0,
        "kills": 12,
        "kill_window": (3.0, pace + 30),
    }


def kill_times(count: int, window: tuple[float, float], rng: random.Random) -> list[float]:
    """`count` random moments in `window`, at least 3 s apart (a restarted worker needs a moment)."""
    lo, hi = window
    slot = (hi - lo) / count
    return [lo + i * slot + rng.uniform(0, max(0.0, slot - 3)) for i in range(count)]


class Chaos(threading.Thread):
    """Runs the scenario timeline relative to t0 and records what it did."""

    def __init__(
        self, stack: Stack, sched: dict, t0: float, rng: random.Random, events: Events
    ) -> None:
        super().__init__(daemon=True)
        self.stack, self.sched, self.t0, self.rng, self.events = stack, sched, t0, rng, events
        self.kills: list[dict] = []
        self.faults: dict[str, dict] = {}
        self.redis_restart: dict = {}
        self.failure: BaseException | None = None
        self.stopping = threading.Event()
        self.sandbox = SandboxClient(stack.sandbox_url)

    def at(self, offset: float) -> None:
        wait = self.t0 + offset - time.monotonic()
        if wait > 0:
            self.stopping.wait(wait)

    def timeline(self) -> list[tuple[float, str, object]]:
        timeline: list[tuple[float, str, object]] = []
        for name in ("outage_503", "timeout", "throttle_429"):
            provider, start, seconds = self.sched[name]
            timeline.append((start, name, (provider, seconds)))
        timeline.append((self.sched["redis_restart_at"], "redis_restart", None))
        for offset in kill_times(self.sched["kills"], self.sched["kill_window"], self.rng):
            timeline.append((offset, "kill", None))
        timeline.sort(key=lambda e: e[0])
        return timeline

    def run(self) -> None:
        from django.db import connection

        try:
            for offset, kind, arg in self.timeline():
                self.at(offset)
                if self.stopping.is_set():
                    return
                if kind == "kill":
                    self.kill()
                elif kind == "redis_restart":
                    self.restart_redis()
                else:
                    provider, seconds = arg  # type: ignore[misc]
                    self.fault(kind, provider, seconds)
        except BaseException as exc:
            self.failure = exc
        finally:
            connection.close()

    def kill(self) -> None:
        from shared.models import Message, MessageStatus

        name = self.rng.choice(sorted(self.stack.workers))
        proc = self.stack.workers[name]
        in_flight = Message.objects.filter(status=MessageStatus.SENDING).count()
        now = time.time()
        self.stack.kill_worker(name)
        self.kills.append({"time": now, "worker": name, "pid": proc.pid, "in_flight": in_flight})
        self.events.append((now, "kill -9", f"{name} pid {proc.pid}; {in_flight} rows in sending"))

    def restart_redis(self) -> None:
        now = time.time()
        down = 3.0
        self.stack.restart_redis(down)
        self.redis_restart = {"time": now, "up": time.time()}
        self.events.append(
            (now, "redis restart", f"kill -9, {down:.0f} s down, fresh empty server")
        )

    def fault(self, kind: str, provider: str, seconds: float) -> None:
        spec = FAULTS[kind]
        now = time.time()
        self.sandbox.fault(provider, seconds=seconds, **spec)  # type: ignore[arg-type]
        self.faults[provider] = {
            "kind": kind,
            "start": now,
            "end": now + seconds,
            "seconds": seconds,
            "spec": spec,
        }
        self.events.append((now, f"fault {provider}", f"{spec} for {seconds:.0f} s"))
