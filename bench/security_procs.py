"""Process bookkeeping for bench.security: start by command, stop by PID (process group), always."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from bench.common import free_port, wait_for  # noqa: F401 - re-exported for bench.security

ROOT = Path(__file__).resolve().parent.parent


def http_ok(url: str, **kwargs) -> bool:
    try:
        return requests.get(url, timeout=2, **kwargs).status_code < 500
    except requests.RequestException:
        return False


class Procs:
    """Named subprocesses in their own sessions; logs go to files kept for the canary sweep."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list[Path] = []
        self.generation = 0

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.generation += 1
        log = self.log_dir / f"{name}-{self.generation}.log"
        self.logs.append(log)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop(self, name: str, timeout: float = 30.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name, timeout=15)
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {name}: {exc}", file=sys.stderr)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())
