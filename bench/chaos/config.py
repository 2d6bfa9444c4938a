"""The chaos run's constants, its log and the random strings it makes tokens of."""

from __future__ import annotations

import re
import secrets
import string
import time

from devtools.procs import ROOT

LOG_DIR = ROOT / "var" / "chaos"
DB_NAME = "corbi_chaos"
PROVIDERS = ("whatsapp", "sendgrid", "telegram", "instagram")
# extra.rate_limit_per_second on every integration (--rate-limit sets it before the run). Low
# enough that the limiter binds while a backlog drains after an outage, so "never above the
# limit" is really tested.
RATE_LIMIT = 5.0
LATENCY_MS = 50
MARKER = re.compile(r"chaos o(\d+)-m(\d+)")
SEND_PATH = {
    "whatsapp": "/Messages.json",
    "sendgrid": "/v3/mail/send",
    "telegram": "/sendMessage",
    "instagram": "/messages",
}
SETTINGS_ENV = {
    "LOG_LEVEL": "INFO",
    "PROVIDER_TIMEOUT_SECONDS": "5",
    "DELIVERY_LEASE_SECONDS": "20",
    "SWEEPER_INTERVAL_SECONDS": "2",
    "SWEEPER_GRACE_SECONDS": "15",
    "DELIVERY_BACKOFF_BASE_SECONDS": "1",
    "DELIVERY_BACKOFF_MAX_SECONDS": "20",
    "DELIVERY_MAX_RETRIES": "30",
}
# How long Redis stays down in the outage phase, while the workers hold unacked tasks.
OUTAGE_SECONDS = 20.0
# The crash phase's worker gives a claimed send this long before the sweeper takes it back (the
# main run uses SETTINGS_ENV's 20 s), so three kill -9s in a row fit in about a minute.
CRASH_ENV = {"DELIVERY_LEASE_SECONDS": "8"}
CRASH_LATENCY_MS = 2000
CRASH_ORG = 99  # the marker's org number of the crash phase's own organization
TOKEN_CHARS = string.ascii_letters + string.digits + "-_"


def log(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


def rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def sandbox_rate() -> int:
    """The sandbox throttles accounts just above our limit: an independent provider-side check."""
    return int(RATE_LIMIT) + 1
