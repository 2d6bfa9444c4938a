"""Strict JSON fields shared by every input serializer, and `validated`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.core.validators import ProhibitNullCharactersValidator
from django.db.models import Model
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from shared.errors import ValidationFailed


def column(model: type[Model], name: str) -> int:
    """The column's max_length: the model declares each text limit once."""
    return model._meta.get_field(name).max_length


_SLOW_VALIDATORS = (ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)
_SURROGATE = re.compile("[\ud800-\udfff]")
DATETIME_HELP = "Must be an ISO 8601 date-time such as 2030-01-01T10:00:00+01:00."


class StrictCharField(serializers.CharField):
    """A CharField that takes JSON strings only (DRF's turns 42 into "42"), and refuses NUL and
    lone surrogates with one C-speed search instead of DRF's per-character Python loop."""

    default_error_messages = {
        "invalid": "Must be a string.",
        "null_characters": "Null characters are not allowed.",
        "surrogates": "Surrogate characters are not allowed.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, _SLOW_VALIDATORS)]

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if "\x00" in data:
            self.fail("null_characters")
        if _SURROGATE.search(data):
            self.fail("surrogates")
        return super().to_internal_value(data)


class OptionalText(StrictCharField):
    """Optional free text: absent, null and "" all mean empty; kept exactly as sent."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(required=False, allow_blank=True, allow_null=True, default="", **kwargs)

    def validate_empty_values(self, data: object) -> tuple[bool, object]:
        if data is None:
            return True, ""
        return super().validate_empty_values(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only (DRF's also takes "yes", 1, "on", …)."""

    def to_internal_value(self, data: object) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """`data` checked by `serializer_class`; raise ValidationFailed with flat field paths."""
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ValidationFailed.from_detail(serializer.errors)
    return dict(serializer.validated_data)


@extend_schema_field(
    {"type": "string", "format": "date-time", "example": "2030-01-01T09:00:00+01:00"}
)
class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time that must carry its offset (a naive one is refused), kept in UTC."""

    default_error_messages = {
        "invalid": DATETIME_HELP,
        "naive": "Must include a UTC offset, such as 2030-01-01T10:00:00+01:00 or ...Z.",
    }

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            self.fail("naive")
        try:
            return value.astimezone(ZoneInfo("UTC"))
        except OverflowError:  # year 1 or 9999 shifted past the calendar by its offset
            self.fail("invalid")
