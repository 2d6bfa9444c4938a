"""Errors raised by services; the API renders each in its envelope with `code` (docs/errors.md)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base for expected, user-facing failures of a service call."""

    code = "bad_request"

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


class ValidationFailed(ServiceError):
    """Input is invalid; `errors` maps each field at fault to its messages."""

    code = "validation_failed"

    @classmethod
    def from_detail(cls, detail: Any) -> ValidationFailed:
        """From a serializer's nested errors, with flat paths such as `messages.3.to`."""
        errors = flatten_errors(detail)
        return cls(first_error(errors), errors=errors)


class NotFound(ServiceError):
    """The object does not exist in this organization."""

    code = "not_found"


class Conflict(ServiceError):
    """The request conflicts with the current state (e.g. provider not connected)."""

    code = "conflict"


class IdempotencyKeyReused(Conflict):
    """The idempotency key already names a message of this organization with other content."""

    code = "idempotency_key_reused"


class MessageNotCancellable(Conflict):
    """The message's send has started (or it is already final): it can no longer be cancelled."""

    code = "message_not_cancellable"


class Unavailable(ServiceError):
    """The service cannot do this until an operator fixes its configuration (HTTP 503)."""

    code = "unavailable"


class TokenUndecryptable(Unavailable):
    """A stored provider token does not decrypt with any configured FERNET_KEY."""

    code = "token_undecryptable"


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """A serializer's nested error detail as {"field.sub": [messages]}; an object-level error
    of a nested item (DRF's `non_field_errors`) belongs to the item's own path."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors" and prefix:
                name = prefix
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten_errors(value, name))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            out[prefix or "non_field_errors"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                name = f"{prefix}.{index}" if prefix else str(index)
                out.update(flatten_errors(item, name))
    else:
        out[prefix or "non_field_errors"] = [str(detail)]
    return out


def first_error(errors: dict[str, list[str]]) -> str:
    """The envelope's one-line message: the first field at fault and its first message."""
    if not errors:
        return "The request is invalid."
    field, messages = next(iter(errors.items()))
    if field == "non_field_errors":
        return messages[0]
    return f"{field}: {messages[0]}"


class UrlNotAllowed(ValidationFailed):
    """A webhook URL that may not be called: not https, or its host resolves to a loopback,
    private, link-local or other non-public address (SSRF)."""

    code = "url_not_allowed"


class WebhookEndpointDisabled(Conflict):
    """The webhook endpoint was disabled (410 Gone, or failing too long)."""

    code = "webhook_endpoint_disabled"


class WebhookEndpointLimit(Conflict):
    """The organization already has WEBHOOK_MAX_ENDPOINTS webhook endpoints."""

    code = "webhook_endpoint_limit"
