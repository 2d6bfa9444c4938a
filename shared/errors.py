"""Errors raised by services; the API renders each in its envelope with `code` (docs/errors.md)."""

from __future__ import annotations


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


class NotFound(ServiceError):
    """The object does not exist in this organization."""

    code = "not_found"


class Conflict(ServiceError):
    """The request conflicts with the current state (e.g. provider not connected)."""

    code = "conflict"


class Unavailable(ServiceError):
    """The service cannot do this until an operator fixes its configuration (HTTP 503)."""

    code = "unavailable"


class TokenUndecryptable(Unavailable):
    """A stored provider token does not decrypt with any configured FERNET_KEY."""

    code = "token_undecryptable"
