"""What every delivery step hands on: outcomes, the per-send record, the limiter and metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from shared.models import Message
    from shared.providers.base import ProviderError
    from shared.ratelimit import Limit


class OutcomeStatus(StrEnum):
    """What happened to one message or booking in one delivery task."""

    SENT = "sent"
    FAILED = "failed"
    DEFERRED = "deferred"
    SKIPPED = "skipped"


class Release(StrEnum):
    """Why a claimed message was not sent: it waited for a send thread until its lease ran short
    (LEASE); its rate-limit slot, booked at the start gate, is later (SLOT); its limit could not
    be checked (LIMITER); or its start could not be recorded as this claim's (LOST: the row is
    no longer ours)."""

    LEASE = "lease"
    SLOT = "slot"
    LIMITER = "limiter"
    LOST = "lost"


class AttemptOutcome(StrEnum):
    """`MessageAttempt.outcome`."""

    SENT = "sent"
    RATE_LIMITED = "rate_limited"
    RETRY = "retry"
    CREDENTIALS_REJECTED = "credentials_rejected"
    FAILED = "failed"


class SendResult(StrEnum):
    """The `outcome` label of corbi_sends_total."""

    SENT = "sent"
    RATE_LIMITED = "rate_limited"
    RETRIED = "retried"
    CREDENTIALS_REJECTED = "credentials_rejected"
    FAILED = "failed"


class RetryReason(StrEnum):
    """The `reason` label of corbi_retries_total."""

    TRANSIENT = "transient"
    RATE_LIMITER = "rate_limiter"


class DeferralScope(StrEnum):
    """The `scope` label of corbi_rate_limit_deferrals_total."""

    OUR_LIMIT = "our_limit"
    PROVIDER_429 = "provider_429"


@dataclass(frozen=True)
class DeliveryOutcome:
    """What happened to one delivery task; `delay` is set when the task must run again later.

    `due_at` is the same moment as a time: publish with it as the ETA, since the seconds of
    `delay` were counted from when the batch began, not from when its follow-ups are published.
    """

    status: OutcomeStatus
    delay: float | None = None
    reason: str = ""
    due_at: datetime | None = None


@dataclass
class SendRecord:
    """One provider call made for a claimed message: its id, or the error, or why it never ran."""

    message: Message
    number: int
    started: datetime
    elapsed: float = 0.0
    provider_id: str = ""
    error: ProviderError | None = None
    released: Release | None = None
    # Released after its start was recorded (the wait for the record made it late): the
    # release takes the attempt back, so no call is counted that never went out.
    counted: bool = False
    # Released at the start gate for its rate-limit slot: the seconds until that slot (it is
    # booked, and the message is deferred to it), or None when none could be booked ...
    wait: float | None = None
    # ... and, for LIMITER, the error (a broken key, or Redis unreachable: `outage`).
    limiter_error: Exception | None = None
    outage: bool = False
    # SLOT: the start gate already deferred it to its slot (and published its task) ...
    deferred: bool = False
    # ... or it went stale after the gate: the slot it held, kept on the row when re-queued.
    slot_at: datetime | None = None


class SlotLimiter(Protocol):
    """The shared rate limiter as delivery uses it (`shared.ratelimit.RateLimiter`)."""

    def reserve_many(
        self,
        requests: Sequence[Sequence[Limit]],
        *,
        max_wait: float = ...,
        booked_ago: Sequence[float | None] | None = ...,
    ) -> list[float | Exception]:
        """Book one slot per request in one round trip: seconds until each, or its error;
        `booked_ago` gives back a stale earlier slot (see RateLimiter.reserve_many)."""

    def pause(self, limits: Sequence[Limit], seconds: float) -> None:
        """Allow no event on any of `limits` for `seconds`."""


class DeliveryMetrics(Protocol):
    """The counters delivery records (`shared.metrics.Metrics`)."""

    def send_finished(self, provider: str, outcome: str, seconds: float) -> None:
        """Count one finished provider call and observe its latency."""

    def sends_finished(self, sends: Iterable[tuple[str, str, float]]) -> None:
        """`send_finished` for many (provider, outcome, seconds)."""

    def retry_scheduled(self, provider: str, reason: str) -> None:
        """Count one scheduled retry."""

    def rate_limit_deferred(self, provider: str, scope: str, count: int = 1) -> None:
        """Count `count` deferrals to a later rate-limit slot."""
