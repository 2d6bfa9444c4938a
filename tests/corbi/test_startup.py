"""A missing or invalid FERNET_KEY stops every entry point, naming the setting, never the value."""

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


def run(cmd: list[str], key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FERNET_KEY"}
    env.update({"CORBI_DOTENV": "0", "DJANGO_SETTINGS_MODULE": "corbi.settings"})
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
