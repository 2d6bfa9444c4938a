"""What the app knows about one provider, declared once on its adapter class as `spec`.

Validation (shared.validation), the registry, the base-URL lookup, the model's choices (and so
the API schema's enums), default rate limits and the README's Field Guide are all read from these
declarations: adding a provider means one module in shared/providers/ with its adapter and spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# A field check returns the normalised value or raises ValueError with a user-facing message.
Check = Callable[[Any], Any]


@dataclass(frozen=True)
class ExtraField:
    """One non-secret connection field kept in `Integration.extra`."""

    name: str
    check: Check
    help: str
    required: bool = False
    # Where a Test Connection sends its test message; may also be given for one test only.
    test_destination: bool = False
    # Filled in on connect when absent (never for a partial Test Connection override).
    default: str | None = None


@dataclass(frozen=True)
class MessageRules:
    """How a provider that delivers messages takes them."""

    destination: Check
    destination_help: str
    body_limit: int
    # Email: a subject is required and html may stand in for the text body; others: text only.
    email: bool = False


@dataclass(frozen=True)
class ProviderSpec:
    """One provider: its identity, credential shape, fields, limits and where its API lives."""

    slug: str
    label: str
    vendor: str
    token_help: str
    extra: tuple[ExtraField, ...]
    # The Django setting holding the API's base URL (PROVIDER_SANDBOX_URL aware in settings).
    base_url_setting: str
    # Messages per second per (organization, provider); RATE_LIMIT_<SLUG> overrides it.
    default_rate_per_second: float
    # Returns what is wrong with a (stripped, non-empty) token, "" when its shape is right.
    token_problem: Callable[[str], str] = lambda token: ""
    messages: MessageRules | None = None
    # Adapter keyword option -> the Django setting that supplies it.
    adapter_settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> dict[str, ExtraField]:
        return {f.name: f for f in self.extra}

    @property
    def test_destination(self) -> str | None:
        """The `extra` field a Test Connection sends its test message to, if any."""
        return next((f.name for f in self.extra if f.test_destination), None)
