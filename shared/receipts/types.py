"""What every provider's receipt becomes, and the forward-only order of message statuses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.models import MessageStatus

# A receipt moves a message only to a higher rank: a late `delivered` never overwrites `read`,
# and a failure after acceptance (undelivered, bounced) ends the story unless the message was read.
RANK = {
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.UNDELIVERED: 3,
    MessageStatus.BOUNCED: 3,
    MessageStatus.READ: 4,
}
# Statuses a receipt must wait for: the worker has not recorded the send yet.
NOT_YET_SENT = frozenset({MessageStatus.QUEUED, MessageStatus.SENDING})


class MalformedReceipt(ValueError):
    """A request that is not a receipt we can read (HTTP 400)."""


# Provider times are Unix seconds (or milliseconds); anything outside these years is not one.
_EARLIEST, _LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def text(value: Any, name: str, *, limit: int = 300) -> str:
    """A provider field as text: a string or number, at most `limit` characters, no NUL."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedReceipt(f"{name} must be a string.")
    result = str(value)
    if len(result) > limit or "\x00" in result:
        raise MalformedReceipt(f"{name} must be at most {limit} characters, without NUL.")
    return result


def moment(value: Any, name: str, *, per_second: int = 1) -> datetime | None:
    """A Unix time (in 1/`per_second` units) as an aware datetime; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedReceipt(f"{name} must be an integer Unix time.")
    seconds = value / per_second
    if not _EARLIEST.timestamp() <= seconds < _LATEST.timestamp():
        raise MalformedReceipt(f"{name} is not a time between 2000 and 2100.")
    return datetime.fromtimestamp(seconds, UTC)


class Outcome(StrEnum):
    """What became of one receipt (the `outcome` label of corbi_receipts_total)."""

    APPLIED = "applied"  # moved the message's status
    RECORDED = "recorded"  # stored on the message; no status change (older, or informational)
    EARLY = "early"  # stored; applied once the worker records the send (the sweeper does it)
    DUPLICATE = "duplicate"  # seen before: nothing changes
    UNKNOWN_MESSAGE = "unknown_message"  # no such message for this integration: dropped
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"


def moves_forward(current: str, new: str) -> bool:
    """True when a receipt saying `new` may replace `current`."""
    return current in RANK and new in RANK and RANK[current] < RANK[new]


@dataclass(frozen=True)
class MessageRef:
    """How a receipt names its message: our id, the provider's id, or a read watermark."""

    message_pk: int | None = None
    provider_message_id: str = ""
    # Instagram read/delivery watermarks: every message to `recipient` sent up to `until`.
    recipient: str = ""
    until: datetime | None = None


@dataclass(frozen=True)
class Receipt:
    """One provider event about one message (or, with a watermark, several)."""

    provider: str
    ref: MessageRef
    provider_event_id: str
    provider_status: str
    status: str = ""  # a MessageStatus from RANK, or "" for an informational event
    error_code: str = ""
    reason: str = ""
    occurred_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """This receipt as JSON (to keep it while its message is not recorded yet)."""
        data = asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat() if self.occurred_at else None
        data["ref"] = {"provider_message_id": self.ref.provider_message_id}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Receipt:
        occurred = data.get("occurred_at")
        return cls(
            **{
                **data,
                "ref": MessageRef(provider_message_id=data["ref"]["provider_message_id"]),
                "occurred_at": datetime.fromisoformat(occurred) if occurred else None,
            }
        )
