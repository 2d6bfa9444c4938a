"""A bad FERNET_KEY or a lease no longer than a provider call stops every entry point, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "x8bJ4h9pTQ2mD6qWz1yV3nR5sK7uL0aC9eF2gH4iJ6k="

BAD_KEYS = {
    "missing": None,
    "empty": "",
    "not_base64": "this is !!! not base64 at all, nope nope nope",
    "short": "c2hvcnRrZXk=",
    "second_of_two_invalid": GOOD_KEY + ",garbageKeyValue123",
}

ENTRY_POINTS = {
    "manage.py": [sys.executable, "manage.py", "check"],
    "worker": [sys.executable, "-c", "import corbi.celery"],
    "wsgi": [sys.executable, "-c", "import corbi.wsgi"],
}


def run(cmd: list[str], key: str | None, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FERNET_KEY"}
    env.update({"CORBI_DOTENV": "0", "DJANGO_SETTINGS_MODULE": "corbi.settings", **extra_env})
    if key is not None:
        env["FERNET_KEY"] = key
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_bad_fernet_key_refuses_to_start(entry, case):
    key = BAD_KEYS[case]
    result = run(ENTRY_POINTS[entry], key)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "FERNET_KEY" in output
    if key:
        for part in key.split(","):
            assert part not in output


def test_good_fernet_key_starts():
    result = run(ENTRY_POINTS["manage.py"], GOOD_KEY)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("lease", ["2", "1"])
def test_a_lease_not_longer_than_the_provider_timeout_refuses_to_start(entry, lease):
    result = run(
        ENTRY_POINTS[entry], GOOD_KEY, DELIVERY_LEASE_SECONDS=lease, PROVIDER_TIMEOUT_SECONDS="2"
    )

    assert result.returncode != 0
    assert "DELIVERY_LEASE_SECONDS must exceed PROVIDER_TIMEOUT_SECONDS" in result.stderr


def test_a_lease_longer_than_the_provider_timeout_starts():
    result = run(
        ENTRY_POINTS["manage.py"],
        GOOD_KEY,
        DELIVERY_LEASE_SECONDS="3",
        PROVIDER_TIMEOUT_SECONDS="2",
    )
    assert result.returncode == 0, result.stderr


# --- real servers: gunicorn, a Celery worker and beat refuse a bad FERNET_KEY within 5 s ----

SERVER_BAD_KEYS = {
    "unset": None,
    "empty": "",
    "not_base64": "this is !!! not base64 at all, nope nope nope",
    "wrong_length": "c2hvcnRrZXk=",
}
SERVER_DEADLINE_SECONDS = 5.0
SERVER_KILL_AFTER_SECONDS = 10.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_command(server: str, tmp: Path) -> list[str]:
    if server == "web":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "corbi.wsgi",
            "--bind",
            f"127.0.0.1:{_free_port()}",
            "--workers",
            "1",
        ]
    if server == "worker":
        return [sys.executable, "-m", "celery", "-A", "corbi", "worker", "--pool", "threads"]
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "corbi",
        "beat",
        "--schedule",
        str(tmp / "beat-schedule"),
    ]


def _start_and_time(server: str, case: str, tmp: Path) -> dict:
    import signal
    import time

    key = SERVER_BAD_KEYS[case]
    env = {k: v for k, v in os.environ.items() if k not in ("FERNET_KEY", "PYTEST_CURRENT_TEST")}
    env.update({"CORBI_DOTENV": "0", "DJANGO_SETTINGS_MODULE": "corbi.settings"})
    if key is not None:
        env["FERNET_KEY"] = key
    workdir = tmp / f"{server}-{case}"
    workdir.mkdir()
    started = time.monotonic()
    proc = subprocess.Popen(
        _server_command(server, workdir),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    killed = False
    try:
        out, err = proc.communicate(timeout=SERVER_KILL_AFTER_SECONDS)
    except subprocess.TimeoutExpired:
        killed = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return {
        "elapsed": time.monotonic() - started,
        "returncode": proc.returncode,
        "killed": killed,
        "stdout": out,
        "stderr": err,
        "key": key,
    }


@pytest.fixture(scope="module")
def server_starts(tmp_path_factory):
    """Start every (server, bad key) pair, one at a time so the timing is not a CPU contest, and record how each ended."""
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("servers")
    pairs = [(s, c) for s in ("web", "worker", "beat") for c in SERVER_BAD_KEYS]
    with ThreadPoolExecutor(max_workers=1) as pool:
        results = list(pool.map(lambda pair: _start_and_time(*pair, tmp), pairs))
    return dict(zip(pairs, results, strict=True))


@pytest.mark.parametrize("server", ["web", "worker", "beat"])
@pytest.mark.parametrize("case", sorted(SERVER_BAD_KEYS))
def test_server_with_bad_fernet_key_exits_non_zero_within_5_s(server_starts, server, case):
    result = server_starts[(server, case)]
    assert not result["killed"], f"{server} still running after {SERVER_KILL_AFTER_SECONDS} s"
    assert result["returncode"] != 0
    assert result["elapsed"] < SERVER_DEADLINE_SECONDS, result["elapsed"]
    assert "FERNET_KEY" in result["stderr"], result["stderr"][-2000:]
    if result["key"]:
        assert result["key"] not in result["stdout"] + result["stderr"]
