"""Process CPU and memory accounting for the benchmark (psutil; read-only, never signals)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

import psutil


def _family(pid: int) -> list[psutil.Process]:
    """The process and its live descendants (prefork children); [] once it is gone."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pids: Iterable[int]) -> float:
    """user+system CPU seconds of the processes and their live descendants."""
    total = 0.0
    for pid in pids:
        for proc in _family(pid):
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of one process plus its live descendants."""
    total = 0
    for proc in _family(pid):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakRss:
    """Samples the RSS of each pid every `interval` seconds in a daemon thread; keeps the peak."""

    def __init__(self, pids: list[int], interval: float = 0.25) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> dict[int, int]:
        now = {pid: rss_bytes(pid) for pid in self.pids}
        for pid, value in now.items():
            self.peak[pid] = max(self.peak[pid], value)
        return now

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


class CpuSnapshot:
    """CPU seconds by category (our processes by pid, Postgres and Redis by name) and host-wide.

    `delta(before)` gives the seconds each category used in between. Processes that start in
    between count from zero; processes that exit in between are lost (short-lived backends).
    """

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.host = psutil.cpu_times()
        self.by_pid: dict[int, tuple[str, float]] = {}
        mine: set[int] = set()
        # First group wins: the bench process's family also holds every worker it spawned.
        for name, pids in groups.items():
            for pid in pids:
                for proc in _family(pid):
                    if proc.pid not in mine:
                        mine.add(proc.pid)
                        self._add(proc, name)
        # A "redis" group (a private redis-server) replaces the by-name match of the shared one.
        private_redis = "redis" in groups
        for proc in psutil.process_iter(["name"]):
            if proc.pid in mine:
                continue
            label = proc.info.get("name") or ""
            if label.startswith("postgres"):
                self._add(proc, "postgres")
            elif label.startswith("redis-server") and not private_redis:
                self._add(proc, "redis")

    def _add(self, proc: psutil.Process, name: str) -> None:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        self.by_pid[proc.pid] = (name, t.user + t.system)

    def delta(self, before: CpuSnapshot) -> tuple[dict[str, float], float, float]:
        """({category: cpu s}, host busy cpu s, host total cpu s) since `before`."""
        out: dict[str, float] = {}
        for pid, (name, value) in self.by_pid.items():
            old = before.by_pid.get(pid)
            base = old[1] if old and old[0] == name else 0.0
            out[name] = out.get(name, 0.0) + max(0.0, value - base)

        def busy(t) -> float:
            return sum(t) - t.idle - getattr(t, "iowait", 0.0)

        return out, busy(self.host) - busy(before.host), sum(self.host) - sum(before.host)


def self_pid() -> int:
    return os.getpid()
