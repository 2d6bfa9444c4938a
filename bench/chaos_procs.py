"""Process bookkeeping for bench.chaos: every child is started in its own session and stopped by
its own pid/process group (never by name), also on exceptions and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "chaos"

_procs: list[subprocess.Popen] = []
_lock = threading.Lock()  # spawn vs stop_all: no child may start once the cleanup has begun
_closing = threading.Event()


def spawn(name: str, cmd: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Start `cmd` in a new session; output goes to var/chaos/<name>.log unless stdout is given."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    if "stdout" not in kwargs:
        kwargs["stdout"] = (LOG_DIR / f"{name}.log").open("ab")
        kwargs["stderr"] = subprocess.STDOUT
    with _lock:
        if _closing.is_set():
            raise RuntimeError(f"not starting {name}: shutting down")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, **kwargs)
        _procs.append(proc)
    return proc


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    # start_new_session=True makes the child's pid its process-group id: only our child and
    # whatever it forked are signalled.
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL a child we started (its process group) and reap it."""
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    if proc in _procs:
        _procs.remove(proc)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    else:
        _signal_group(proc, signal.SIGKILL)  # reap any orphans left in its group
    if proc in _procs:
        _procs.remove(proc)


def stop_all() -> None:
    """Stop every child still registered: TERM all first, then wait, then KILL stragglers."""
    with _lock:
        _closing.set()
        live = list(_procs)
    for proc in live:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in live:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in live:
        _signal_group(proc, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    with _lock:
        _procs.clear()


def live_pids() -> list[int]:
    return [p.pid for p in _procs if p.poll() is None]
