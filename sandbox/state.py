"""In-memory sandbox state: accounts, faults, recordings, token buckets and runtime config."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.accounts import normalize_account

PROVIDERS = ("whatsapp", "sendgrid", "telegram", "instagram", "google_calendar")

DEFAULT_CONFIG: dict[str, Any] = {
    "latency_ms": 0,
    "telegram_bot_rate": 30.0,
    "telegram_chat_rate": 1.0,
    "telegram_group_per_minute": 20.0,
    "google_rate_limit_status": 403,
    "callback_delay_ms": [50, 200],
    "callback_timeout_seconds": 5.0,
    "callback_retries": 3,
    "callback_retry_delay_ms": 200,
    "callback_order": "in_order",
    "callback_duplicate_rate": 0.0,
    "whatsapp_sender_mps": 80.0,
    "timeout_hold_seconds": 60.0,
    # OAuth (google_oauth.py, instagram_oauth.py): consent "allow" or "deny", token lifetimes
    # (seconds; tests shorten them), whether a Google code exchange gives a refresh token, and
    # how old an Instagram long-lived token must be before it can be refreshed.
    "google_oauth_consent": "allow",
    "google_oauth_refresh_token": True,
    # A space-separated scope the consent grants instead of the one asked (granular consent).
    "google_oauth_granted_scope": None,
    "google_token_ttl_seconds": 3599,
    "instagram_oauth_consent": "allow",
    "instagram_token_ttl_seconds": 5_184_000,
    "instagram_refresh_min_age_seconds": 86_400,
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_CALLBACK_CHECKS = {
    "callback_timeout_seconds": lambda v: _number(v) and 0 < v <= 60,
    "callback_retries": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10,
    "callback_order": lambda v: v in ("in_order", "reversed", "shuffled"),
    "callback_duplicate_rate": lambda v: _number(v) and 0 <= v <= 1,
}
_CALLBACK_RULES = {
    "callback_timeout_seconds": "callback_timeout_seconds must be a number in (0, 60]",
    "callback_retries": "callback_retries must be an integer from 0 to 10",
    "callback_order": "callback_order must be in_order, reversed or shuffled",
    "callback_duplicate_rate": "callback_duplicate_rate must be a number from 0 to 1",
}


class ConfigError(ValueError):
    """A control request carried an invalid value."""


class TokenBucket:
    """A token bucket refilled continuously at `rate` tokens/second, holding at most `capacity`."""

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(rate, 1.0))
        self.tokens = self.capacity
        self.last = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def wait_time(self, now: float | None = None) -> float:
        """Seconds until one token is available (0 if one is available now)."""
        now = time.monotonic() if now is None else now
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else math.inf

    def take(self) -> None:
        self.tokens -= 1.0

    def remaining(self) -> int:
        self._refill(time.monotonic())
        return max(0, int(self.tokens))


def acquire(buckets: list[TokenBucket]) -> float:
    """Take one token from every bucket, or none; return 0 on success else the wait in seconds."""
    now = time.monotonic()
    wait = max((b.wait_time(now) for b in buckets), default=0.0)
    if wait > 0:
        return wait
    for b in buckets:
        b.take()
    return 0.0


def retry_after_seconds(wait: float) -> int:
    """Whole seconds a client should wait, never less than 1."""
    return max(1, math.ceil(wait))


@dataclass
class Fault:
    """A forced provider behaviour, consumed per matching request."""

    id: str
    provider: str
    mode: str
    status: int | None = None
    body: Any = None
    retry_after: float | None = None
    latency_ms: int | None = None
    count: int | None = None
    seconds: float | None = None
    path: str | None = None
    expires_at: float | None = None
    remaining: int | None = None
    created: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class State:
    """Everything the sandbox remembers; one instance per app."""

    def __init__(self, config: dict[str, Any], preload: list[dict[str, Any]] | None = None):
        self.base_config = {**DEFAULT_CONFIG, **config}
        self.preload = list(preload or [])
        self.record_limit = 500_000
        self.tasks: set[asyncio.Task[Any]] = set()
        self._init()

    def _init(self) -> None:
        self.config: dict[str, Any] = dict(self.base_config)
        self.accounts: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in PROVIDERS}
        self.faults: list[Fault] = []
        self.records: deque[dict[str, Any]] = deque(maxlen=self.record_limit)
        self.callbacks: deque[dict[str, Any]] = deque(maxlen=self.record_limit)
        self.buckets: dict[tuple[Any, ...], TokenBucket] = {}
        self.seq = itertools.count(1)
        self.callback_seq = itertools.count(1)
        self.twilio_messages: dict[str, Any] = {}
        self.twilio_sender_slots: dict[str, float] = {}
        # (account_sid, sender or "*", customer) -> unix time of the customer's last inbound
        self.whatsapp_inbound: dict[tuple[str, str, str], float] = {}
        # (ig_id, sender IGSID) -> unix time of the user's last inbound message
        self.instagram_inbound: dict[tuple[str, str], float] = {}
        self.telegram_files: dict[str, dict[str, Any]] = {}
        self.meta_webhook: dict[str, Any] | None = None
        self.telegram_message_ids: dict[tuple[str, str], int] = {}
        self.google_events: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.google_tokens: dict[str, dict[str, Any]] = {}
        self.google_token_expiry: dict[str, float] = {}
        # OAuth: authorization codes, issued refresh tokens, access token -> its refresh token,
        # revoked registered refresh tokens; Instagram's issued tokens and codes.
        self.google_codes: dict[str, dict[str, Any]] = {}
        self.google_refresh_tokens: dict[str, dict[str, Any]] = {}
        self.google_token_parent: dict[str, str] = {}
        self.google_revoked: set[str] = set()
        self.instagram_codes: dict[str, dict[str, Any]] = {}
        self.instagram_tokens: dict[str, dict[str, Any]] = {}
        self.add_accounts(self.preload)

    def add_accounts(self, specs: list[Any]) -> list[dict[str, Any]]:
        """Validate every account first, then register them all (same key replaces)."""
        normalized = [normalize_account(spec) for spec in specs]
        for provider, key, account in normalized:
            old = self.accounts[provider].get(key)
            if old is not None and provider == "google_calendar":
                for token in [t for t, a in self.google_tokens.items() if a is old]:
                    del self.google_tokens[token]
            self.accounts[provider][key] = account
            if provider == "google_calendar" and account["access_token"]:
                self.google_tokens[account["access_token"]] = account
        return [account for _, _, account in normalized]

    def reset(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        self._init()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def bucket(
        self, key: tuple[Any, ...], rate: float, capacity: float | None = None
    ) -> TokenBucket:
        """The bucket for `key`, recreated if its rate changed."""
        b = self.buckets.get(key)
        if b is None or b.rate != float(rate):
            b = self.buckets[key] = TokenBucket(rate, capacity)
        return b

    def account_bucket(
        self, provider: str, key: str, account: dict[str, Any]
    ) -> TokenBucket | None:
        rate = account.get("rate_per_second")
        if not rate:
            return None
        return self.bucket((provider, key), float(rate))

    def update_config(self, settings: dict[str, Any]) -> dict[str, Any]:
        unknown = set(settings) - set(DEFAULT_CONFIG)
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        for key, value in settings.items():
            if key == "callback_delay_ms":
                if (
                    not isinstance(value, list)
                    or len(value) != 2
                    or not all(isinstance(v, int | float) and v >= 0 for v in value)
                    or value[0] > value[1]
                ):
                    raise ConfigError("callback_delay_ms must be [min, max] milliseconds")
            elif key in _CALLBACK_CHECKS:
                if not _CALLBACK_CHECKS[key](value):
                    raise ConfigError(_CALLBACK_RULES[key])
            elif key in ("google_oauth_consent", "instagram_oauth_consent"):
                if value not in ("allow", "deny"):
                    raise ConfigError(f"{key} must be allow or deny")
            elif key == "google_oauth_granted_scope":
                if value is not None and not (isinstance(value, str) and value.strip()):
                    raise ConfigError(f"{key} must be a scope string or null")
            elif key == "google_oauth_refresh_token":
                if not isinstance(value, bool):
                    raise ConfigError(f"{key} must be true or false")
            elif key == "google_rate_limit_status":
                if value not in (403, 429):
                    raise ConfigError("google_rate_limit_status must be 403 or 429")
            elif (not isinstance(value, int | float) or isinstance(value, bool) or value < 0) or (
                key.startswith("telegram_") and value <= 0
            ):
                raise ConfigError(f"{key} must be a positive number")
        self.config.update(settings)
        return dict(self.config)

    def add_fault(self, spec: dict[str, Any]) -> Fault:
        provider = spec.get("provider")
        if provider not in PROVIDERS:
            raise ConfigError(f"provider must be one of {list(PROVIDERS)}")
        mode = spec.get("mode", "status")
        if mode not in ("status", "timeout", "latency"):
            raise ConfigError("mode must be status, timeout or latency")
        status = spec.get("status")
        if mode == "status" and not (isinstance(status, int) and 400 <= status <= 599):
            raise ConfigError("mode status needs an integer status between 400 and 599")
        latency_ms = spec.get("latency_ms")
        if mode == "latency" and not (isinstance(latency_ms, int | float) and latency_ms >= 0):
            raise ConfigError("mode latency needs latency_ms >= 0")
        count, seconds = spec.get("count"), spec.get("seconds")
        if count is not None and not (isinstance(count, int) and count > 0):
            raise ConfigError("count must be a positive integer")
        if seconds is not None and not (isinstance(seconds, int | float) and seconds > 0):
            raise ConfigError("seconds must be a positive number")
        retry_after = spec.get("retry_after")
        if retry_after is not None and not (
            isinstance(retry_after, int | float) and retry_after >= 0
        ):
            raise ConfigError("retry_after must be a non-negative number")
        path = spec.get("path")
        if path is not None and not isinstance(path, str):
            raise ConfigError("path must be a string prefix")
        fault = Fault(
            id="F" + uuid.uuid4().hex[:16],
            provider=provider,
            mode=mode,
            status=status,
            body=spec.get("body"),
            retry_after=retry_after,
            latency_ms=latency_ms,
            count=count,
            seconds=seconds,
            path=path,
            expires_at=time.time() + seconds if seconds else None,
            remaining=count,
        )
        self.faults.append(fault)
        return fault

    def take_fault(self, provider: str, path: str) -> Fault | None:
        """The first live fault for this request, consuming one use of it."""
        now = time.time()
        for fault in list(self.faults):
            if fault.expires_at is not None and now >= fault.expires_at:
                self.faults.remove(fault)
                continue
            if fault.provider != provider or (fault.path and not path.startswith(fault.path)):
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry = {"seq": next(self.seq), **entry}
        self.records.append(entry)
        return entry

    def record_callback(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry = {"seq": next(self.callback_seq), **entry}
        self.callbacks.append(entry)
        return entry
