"""`make run`: the banner, a busy port, and supervision of the worker and beat."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools import commands, devstack
from devtools.procs import Procs, wait_for

ROOT = Path(__file__).resolve().parents[2]
FERNET_KEY = "x8bJ4h9pTQ2mD6qWz1yV3nR5sK7uL0aC9eF2gH4iJ6k="
ADMIN = {"token": "a" * 40, "org_id": 7, "username": "demo-admin"}
MEMBER = {"token": "m" * 40, "org_id": 7, "username": "demo-member"}


def banner(capsys) -> str:
    devstack.print_banner(
        "http://127.0.0.1:8000", ADMIN, MEMBER, 8025, 5555, "redis://x/0", "demo:pw"
    )
    return capsys.readouterr().out


def test_the_banner_has_a_ready_connect_and_test_command_for_each_of_the_five_providers(capsys):
    out = banner(capsys)
    assert len(devstack.DEMO_ACCOUNTS) == 5
    for provider, spec in devstack.DEMO_ACCOUNTS.items():
        url = f"http://127.0.0.1:8000/api/integrations/{provider}"
        connect = [line for line in out.splitlines() if line.strip().endswith(f"{url}/connect/")]
        assert len(connect) == 1, provider
        argv = shlex.split(connect[0])
        assert argv[:2] == ["curl", "-s"]
        assert f"Authorization: Token {ADMIN['token']}" in argv and "X-Org-ID: 7" in argv
        body = json.loads(argv[argv.index("-d") + 1])
        assert body == {"token": spec["token"], "extra": spec["extra"]}, provider
        assert any(line.strip().endswith(f"{url}/test/") for line in out.splitlines()), provider


def stack_env(tmp_path: Path, **ports: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        {
            "FERNET_KEY": FERNET_KEY,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'corbi.sqlite3'}",
            "REDIS_URL": "redis://127.0.0.1:6379/6",
            "CORBI_VAR_DIR": str(tmp_path / "var"),
            "PYTHONUNBUFFERED": "1",
            **{name: str(port) for name, port in ports.items()},
        }
    )
    return env


@pytest.mark.parametrize("variable", ["PORT", "SANDBOX_PORT", "FLOWER_PORT"])
def test_a_busy_port_stops_make_run_at_once_naming_the_port_and_its_variable(tmp_path, variable):
    ports = {name: devstack.free_port() for name in ("PORT", "SANDBOX_PORT", "FLOWER_PORT")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports[variable] = busy.getsockname()[1]
        started = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "devtools.devstack"],
                cwd=ROOT,
                env=stack_env(tmp_path, **ports),
                capture_output=True,
                text=True,
                timeout=15,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("make run still waiting 15 s after it met a busy port")
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    assert f"Port {ports[variable]} is already in use" in result.stdout
    assert f"set {variable} to another port" in result.stdout
    assert not (tmp_path / "corbi.sqlite3").exists(), "it migrated before checking the ports"


class Devstack:
    """`python -m devtools.devstack` as a subprocess, its output collected line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.procs = Procs()
        argv = commands.python("-m", "devtools.devstack", *args)
        self.proc = self.procs.start("devstack", argv, env, on_line=self.lines.append)

    def stop(self) -> None:
        """TERM first: the devstack stops its children, which run in their own sessions."""
        self.procs.stop(self.proc, timeout=20)

    def output(self) -> str:
        return "".join(self.lines)

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"Started {name} \(pid (\d+)\)", self.output())]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_make_demo_keeps_running_restarts_a_killed_worker_and_stops_everything_on_term(tmp_path):
    ports = {name: devstack.free_port() for name in ("PORT", "SANDBOX_PORT", "FLOWER_PORT")}
    stack = Devstack(stack_env(tmp_path, **ports), "--demo")
    try:
        wait_for(
            lambda: "The demo is done" in stack.output() or stack.proc.poll() is not None,
            50,
            "the demo",
        )
        assert "Demo succeeded" in stack.output(), stack.output()[-3000:]
        # The demo calendar was connected through the OAuth flow (sandbox consent), then synced.
        google = [line for line in stack.output().splitlines() if "oogle" in line]
        assert any(
            "Google Calendar (OAuth): Google Calendar connected." in line for line in google
        ), "\n".join(google)
        assert "google_calendar  connect oauth  test ok=True" in stack.output()
        assert stack.proc.poll() is None, "make demo exited after the demo"
        [first] = stack.pids("worker")
        os.kill(first, signal.SIGKILL)

        wait_for(lambda: len(stack.pids("worker")) == 2, 20, "a new worker")
        assert f"worker (pid {first}) died unexpectedly (killed by SIGKILL)" in stack.output()
        assert "restarting it in 1 s" in stack.output()
        second = stack.pids("worker")[1]
        assert alive(second) and stack.proc.poll() is None

        stack.proc.send_signal(signal.SIGTERM)
        assert stack.proc.wait(timeout=20) == 0
        children = [
            pid for name in ("sandbox", "web", "beat", "flower") for pid in stack.pids(name)
        ]
        assert len(children) == 4
        wait_for(lambda: not any(alive(p) for p in [second, *children]), 5, "every child gone")
    finally:
        stack.stop()
