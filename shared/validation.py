"""Connection fields, tokens and destinations, checked against each provider's spec."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from shared.errors import ValidationFailed
from shared.providers.fields import rate
from shared.providers.registry import SPECS
from shared.providers.spec import ExtraField

MAX_TOKEN_LENGTH = 4096
MAX_EXTRA_KEYS = 20
MAX_EXTRA_BYTES = 4096
MAX_EXTRA_STRING = 320

_SECRET_KEY = re.compile(
    r"token|secret|passw|pwd|api[_-]?key|apikey|^auth|[_-]auth|credential|private[_-]?key",
    re.IGNORECASE,
)
# Every provider also takes its own shared rate limit.
COMMON_FIELDS = (
    ExtraField("rate_limit_per_second", rate, "overrides the provider's default shared rate limit"),
)


def extra_fields(provider: str) -> dict[str, ExtraField]:
    """Every `extra` field `provider` accepts, by name."""
    return {f.name: f for f in (*SPECS[provider].extra, *COMMON_FIELDS)}


def validate_token(provider: str, token: Any) -> str:
    """The token, checked for presence, size and (where the provider defines one) its shape."""
    if not isinstance(token, str) or not token.strip():
        raise ValidationFailed(
            "A token is required.", errors={"token": ["This field is required."]}
        )
    token = token.strip()
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValidationFailed(
            "The token is too long.",
            errors={"token": [f"Must be at most {MAX_TOKEN_LENGTH} characters."]},
        )
    problem = SPECS[provider].token_problem(token)
    if problem:
        raise ValidationFailed("The token does not look right.", errors={"token": [problem]})
    return token


def _check_size(extra: Any) -> None:
    if not isinstance(extra, Mapping):
        raise ValidationFailed(
            "extra must be a JSON object.", errors={"extra": ["Must be an object."]}
        )
    if len(extra) > MAX_EXTRA_KEYS:
        problem = f"At most {MAX_EXTRA_KEYS} keys are allowed."
    elif len(json.dumps(extra, default=str)) > MAX_EXTRA_BYTES:
        problem = f"Must be at most {MAX_EXTRA_BYTES} bytes as JSON."
    else:
        return
    raise ValidationFailed("extra is too large.", errors={"extra": [problem]})


def validate_extra(provider: str, extra: Any, *, partial: bool = False) -> dict[str, Any]:
    """Normalised `extra` for `provider`; raises ValidationFailed naming every field at fault.

    With `partial`, required fields may be absent and no defaults are filled in (a Test
    Connection override).
    """
    extra = {} if extra is None else extra
    _check_size(extra)
    fields = extra_fields(provider)
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for key, value in extra.items():
        path = f"extra.{key}"
        if not isinstance(key, str) or _SECRET_KEY.search(key):
            errors[path] = ["extra must not hold secrets; send the secret as `token`."]
        elif key not in fields:
            errors[path] = [f"Unknown field for {provider}. Allowed: {', '.join(sorted(fields))}."]
        elif isinstance(value, str) and len(value) > MAX_EXTRA_STRING:
            errors[path] = [f"Must be at most {MAX_EXTRA_STRING} characters."]
        else:
            try:
                cleaned[key] = fields[key].check(value)
            except ValueError as exc:
                errors[path] = [str(exc)]
    if not partial:
        for name, spec_field in fields.items():
            if spec_field.required and name not in extra:
                errors[f"extra.{name}"] = ["This field is required."]
            elif spec_field.default is not None:
                cleaned.setdefault(name, spec_field.default)
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"{first}: {errors[first][0]}", errors=errors)
    return cleaned


def validate_destination(provider: str, to: Any) -> str:
    """The normalised destination for a message through `provider`: a string, never a number."""
    rules = SPECS[provider].messages
    if rules is None:
        raise ValidationFailed(
            f"{provider} does not deliver messages.",
            errors={"provider": ["This provider does not deliver messages."]},
        )
    if not isinstance(to, str):
        raise ValidationFailed("to: Must be a string.", errors={"to": ["Must be a string."]})
    try:
        return rules.destination(to)
    except ValueError as exc:
        raise ValidationFailed(f"to: {exc}", errors={"to": [str(exc)]}) from None
