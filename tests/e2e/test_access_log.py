"""A real gunicorn started from the repo root never logs a credential query value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bench.common import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "auth_token": "cnryAccessTwQx7Zp9Kd3",
    "apikey": "cnryAccessSgKq4Wm8Zt2",
    "access_token": "cnryAccessIgRt5Wn9Kx3",
    "client_secret": "cnryAccessGoPx8Lz4Wk6",
    "X-Amz-Signature": "cnryAccessAbCd1234Ef5",
}


@pytest.fixture(scope="module")
def gunicorn_access_log(tmp_path_factory):
    """(base URL, access log path) of `python -m gunicorn corbi.wsgi` run with cwd = repo root."""
    log = tmp_path_factory.mktemp("gunicorn") / "access.log"
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CORBI_DOTENV": "0",
        "NO_PROXY": "127.0.0.1",
    }
    argv = ["corbi.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *argv, "--access-logfile", str(log)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base, proc), 60, "gunicorn")
        yield base, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _answers(base: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError("gunicorn exited: " + proc.stderr.read().decode()[-2000:])
    try:
        requests.get(base + "/health/?probe=1", timeout=2)
    except requests.RequestException:
        return False
    return True


@pytest.mark.parametrize("name", list(SECRETS))
def test_a_credential_query_parameter_is_redacted_in_the_access_log(gunicorn_access_log, name):
    base, log = gunicorn_access_log
    marker = f"case-{name.lower()}"
    query = f"page=2&{name}={SECRETS[name]}&ref={marker}"
    requests.get(f"{base}/health/?{query}", headers={"Referer": f"{base}/x?{query}"}, timeout=10)

    line = wait_for(
        lambda: next((x for x in log.read_text().splitlines() if marker in x), None),
        10,
        "the access log line",
    )

    assert SECRETS[name] not in line
    assert f"{name}=[REDACTED]" in line and "page=2" in line
