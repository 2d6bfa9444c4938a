"""Named child processes in their own sessions: start, wait until ready, stop, kill, watch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


class WaitTimeout(RuntimeError):
    """A bounded wait ran out before its condition held."""


class ProcessExited(RuntimeError):
    """A child exited while something waited for it to become ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    """Whether something accepts a TCP connection at host:port (0.5 s connect timeout)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it is truthy (returned) or `timeout` passes (WaitTimeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def describe_exit(code: int) -> str:
    """`exit code N`, or `killed by SIGNAME` for a negative Popen return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group our child leads (its pid): only it and what it forked."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def manage(
    *args: str, env: Mapping[str, str], timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """`python manage.py <args>` from the repository root, output captured as text."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Proc:
    """One started child: what started it, its Popen, and whether we meant it to exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        log: Path | None,
        on_line: Callable[[str], None] | None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log = log
        self.on_line = on_line
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.stopped = False  # set when we stop or kill it: its exit is then expected

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.returncode

    def poll(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        """Signal this child alone (not its group)."""
        assert self.popen is not None
        self.popen.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def log_text(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]


def _pump(stream: IO[bytes], on_line: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, b""):
        on_line(raw.decode(errors="replace"))


class Procs:
    """Children started from the repository root, each in its own session, stopped together.

    Output goes to `log` (appended; `<log_dir>/<name>.log` by default when there is a log_dir
    and no `on_line`), or line by line to `on_line` (stderr then joins stdout unless a log takes
    it), or, with neither, to this process's own stdout/stderr.
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.running: list[Proc] = []  # started and not yet stopped by us
        self.logs: list[Path] = []
        self._lock = threading.Lock()  # start vs stop_all: nothing starts once cleanup began
        self._closing = False

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        log: Path | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> Proc:
        if log is None and on_line is None and self.log_dir is not None:
            log = self.log_dir / f"{name}.log"
        proc = Proc(name, argv, env, log, on_line)
        self.spawn(proc)
        return proc

    def spawn(self, proc: Proc) -> Proc:
        """(Re)start `proc` with its own argv, env and output; it is registered again."""
        if proc.log is not None:
            proc.log.parent.mkdir(parents=True, exist_ok=True)
            if proc.log not in self.logs:
                self.logs.append(proc.log)
        with self._lock:
            if self._closing:
                raise RuntimeError(f"not starting {proc.name}: shutting down")
            proc.popen = self._popen(proc)
            proc.started_at, proc.stopped = time.monotonic(), False
            if proc not in self.running:
                self.running.append(proc)
        if proc.on_line is not None:
            assert proc.popen.stdout is not None
            args = (proc.popen.stdout, proc.on_line)
            threading.Thread(target=_pump, args=args, daemon=True).start()
        return proc

    @staticmethod
    def _popen(proc: Proc) -> subprocess.Popen[bytes]:
        log = proc.log.open("ab") if proc.log is not None else None
        stdout: Any = log
        stderr: Any = subprocess.STDOUT if log is not None else None
        if proc.on_line is not None:
            stdout = subprocess.PIPE
            stderr = log if log is not None else subprocess.STDOUT
        try:
            return subprocess.Popen(
                proc.argv,
                cwd=ROOT,
                env=proc.env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor

    def wait_ready(
        self,
        proc: Proc,
        ready: Callable[[], Any],
        timeout: float,
        what: str | None = None,
        interval: float = 0.1,
    ) -> Any:
        """Wait for `ready()`; ProcessExited (with the log's tail) if `proc` exits first."""

        def check() -> Any:
            if proc.poll() is not None:
                where = f"; see {proc.log}" if proc.log is not None else ""
                raise ProcessExited(
                    f"{proc.name} exited ({describe_exit(proc.poll() or 0)}){where}\n"
                    + proc.log_tail()
                )
            return ready()

        return wait_for(check, timeout, what or proc.name, interval)

    def get(self, name: str) -> Proc | None:
        """The latest running child started under `name`."""
        return next((p for p in reversed(self.running) if p.name == name), None)

    def by_name(self) -> dict[str, Proc]:
        return {p.name: p for p in self.running}

    def _forget(self, proc: Proc) -> None:
        with self._lock:
            if proc in self.running:
                self.running.remove(proc)

    def stop(self, proc: Proc, timeout: float = 15.0, kill_timeout: float = 10.0) -> None:
        """TERM its process group, KILL it if it lingers; also reaps what an exited one left."""
        proc.stopped = True
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                try:
                    proc.wait(timeout=kill_timeout)
                except subprocess.TimeoutExpired:
                    pass
        elif proc.popen is not None:
            signal_group(proc.pid, signal.SIGKILL)
        self._forget(proc)

    def kill(self, proc: Proc, sig: int = signal.SIGKILL, timeout: float = 15.0) -> None:
        """Send `sig` (kill -9 by default) to its process group and reap it."""
        proc.stopped = True
        signal_group(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._forget(proc)

    def stop_all(self, timeout: float = 15.0) -> None:
        """TERM every running child (latest first), wait up to `timeout` in all, then KILL."""
        with self._lock:
            self._closing = True
            procs = list(reversed(self.running))
        for proc in procs:
            proc.stopped = True
            if proc.poll() is None:
                signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            signal_group(proc.pid, signal.SIGKILL)  # also whatever an exited child left behind
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        with self._lock:
            self.running.clear()

    def restart(self, proc: Proc, timeout: float = 15.0) -> Proc:
        """Stop `proc` and start it again with the same argv, env and output."""
        self.stop(proc, timeout=timeout)
        return self.spawn(proc)

    def reopen(self) -> None:
        """Allow starting children again after stop_all (a test's stack used once more)."""
        with self._lock:
            self._closing = False

    def unexpected_exits(self) -> list[Proc]:
        """Running children that exited without us stopping or killing them."""
        return [p for p in list(self.running) if not p.stopped and p.poll() is not None]

    def live_pids(self) -> list[int]:
        return [p.pid for p in self.running if p.alive()]

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())
