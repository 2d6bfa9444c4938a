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


class FieldProblem(ValueError):
    """A check's complaint about one part of a structured value (e.g. `content_sid` of a
    template): reported at `<field>.<part>`."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part
        self.message = message


@dataclass(frozen=True)
class MessageRules:
    """How a provider that delivers messages takes them: destination, text, and what a message
    may carry beyond text (a template, media by URL, attachments, a format, a message tag)."""

    destination: Check
    destination_help: str
    body_limit: int
    # Email: a subject is required and html may stand in for the text body; others: text only.
    email: bool = False
    # Checks a `template` object and returns it normalised, raising FieldProblem; None: no
    # templates. `template_help` describes the object (README Field Guide, API schema).
    template: Check | None = None
    template_help: str = ""
    # The text fields a template message may still carry (the template holds the rest).
    template_allows: tuple[str, ...] = ()
    # How many `media_urls` one message takes (0: none), and the text limit beside media
    # (a caption); 0 means media travels without text.
    media_limit: int = 0
    media_text_limit: int = 0
    # Email attachments (base64 content with a filename and type).
    attachments: bool = False
    # Per-message formatting (Telegram's parse_mode) and message tags (Instagram).
    parse_modes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


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
