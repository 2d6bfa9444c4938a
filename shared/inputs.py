"""The one validation source for message and booking input: the services run these serializers
(the API passes request bodies straight through), and the API schema is generated from them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.validators import ProhibitNullCharactersValidator
from django.db.models import Model
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from shared.errors import ValidationFailed
from shared.models import Booking, Message
from shared.providers.registry import MESSAGING_SLUGS, SPECS


def _column(model: type[Model], name: str) -> int:
    """The column's max_length: the model declares each text limit once."""
    return model._meta.get_field(name).max_length


MAX_ATTENDEES = 50
_SLOW_VALIDATORS = (ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)
_SURROGATE = re.compile("[\ud800-\udfff]")
_DATETIME_HELP = "Must be an ISO 8601 date-time such as 2030-01-01T10:00:00+01:00."


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
        "invalid": _DATETIME_HELP,
        "naive": "Must include a UTC offset, such as 2030-01-01T10:00:00+01:00 or ...Z.",
    }

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            self.fail("naive")
        try:
            return value.astimezone(ZoneInfo("UTC"))
        except OverflowError:  # year 1 or 9999 shifted past the calendar by its offset
            self.fail("invalid")


def check_send_at(value: datetime | None) -> datetime | None:
    """`send_at` as sent: at most SCHEDULE_MAX_AHEAD_SECONDS ahead, and at most
    SCHEDULE_PAST_TOLERANCE_SECONDS in the past (which means now)."""
    if value is None:
        return None
    now = timezone.now()
    if value < now - timedelta(seconds=settings.SCHEDULE_PAST_TOLERANCE_SECONDS):
        raise serializers.ValidationError("Must not be in the past.")
    if value > now + timedelta(seconds=settings.SCHEDULE_MAX_AHEAD_SECONDS):
        days = settings.SCHEDULE_MAX_AHEAD_SECONDS / 86400
        raise serializers.ValidationError(f"Must be at most {days:g} days ahead.")
    return value


class MessageCreateSerializer(serializers.Serializer):
    """One outbound message; the destination format and body limit come from the provider spec."""

    provider = serializers.ChoiceField(
        choices=MESSAGING_SLUGS,
        error_messages={"invalid_choice": f"Must be one of {', '.join(MESSAGING_SLUGS)}."},
    )
    to = StrictCharField(max_length=_column(Message, "to"))  # 320: the longest email address
    body = OptionalText()
    subject = OptionalText(max_length=_column(Message, "subject"))  # 998: RFC 5322's line limit
    html = OptionalText()
    idempotency_key = StrictCharField(
        required=False,
        allow_null=True,
        default=None,
        max_length=_column(Message, "idempotency_key"),
        trim_whitespace=False,
    )
    # Send even to a suppressed recipient: only a transactional message may (docs: README).
    transactional = StrictBooleanField(required=False, default=False)
    ignore_suppression = StrictBooleanField(required=False, default=False)
    send_at = AwareDateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="When to send, ISO 8601 with an offset (e.g. 2030-01-01T09:00:00+01:00); "
        "absent or null: at once. A future time makes the message `scheduled`.",
    )

    def validate_send_at(self, value: datetime | None) -> datetime | None:
        return check_send_at(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        provider = attrs["provider"]
        rules = SPECS[provider].messages
        assert rules is not None  # MESSAGING_SLUGS only
        errors: dict[str, list[str]] = {}
        try:
            attrs["to"] = rules.destination(attrs["to"])
        except ValueError as exc:
            errors["to"] = [str(exc)]
        body, subject, html = attrs["body"], attrs["subject"], attrs["html"]
        if rules.email:
            if not subject.strip():
                errors["subject"] = ["An email needs a subject."]
            if not body.strip() and not html.strip():
                errors["body"] = ["An email needs a body or html."]
        else:
            if subject or html:
                errors["subject" if subject else "html"] = [f"{provider} messages are text only."]
            if not body.strip():
                errors["body"] = ["This field is required."]
        if len(body) > rules.body_limit or len(html) > rules.body_limit:
            errors["body"] = [f"Must be at most {rules.body_limit} characters for {provider}."]
        if attrs["ignore_suppression"] and not attrs["transactional"]:
            errors["ignore_suppression"] = ["Only a message with transactional: true may set it."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class MessageBulkSerializer(serializers.Serializer):
    """A batch of messages (at most BULK_MAX_MESSAGES): all valid or none written."""

    messages = serializers.ListField(
        child=MessageCreateSerializer(), min_length=1, max_length=settings.BULK_MAX_MESSAGES
    )

    def validate_messages(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        errors: list[dict[str, list[str]]] = [{} for _ in items]
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            key = item["idempotency_key"]
            if key is None:
                continue
            if key in seen:
                errors[index] = {
                    "idempotency_key": [f"Repeats the key of message {seen[key]} in this request."]
                }
            else:
                seen[key] = index
        if any(errors):
            raise serializers.ValidationError(errors)
        return items


class LocalDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time left as sent: a naive one is read in the booking's own time zone."""

    default_error_messages = {"invalid": _DATETIME_HELP}

    def enforce_timezone(self, value: datetime) -> datetime:
        return value


class BookingRequestSerializer(serializers.Serializer):
    """A booking as product code sends it; start and end without an offset are in `timezone`."""

    summary = StrictCharField(max_length=_column(Booking, "summary"))
    description = OptionalText(max_length=8000)
    start = LocalDateTimeField()
    end = LocalDateTimeField()
    timezone = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default="UTC",
        max_length=_column(Booking, "timezone"),
    )
    location = OptionalText(max_length=_column(Booking, "location"))
    attendees = serializers.ListField(
        child=serializers.EmailField(),
        required=False,
        allow_null=True,
        max_length=MAX_ATTENDEES,
        default=list,
    )

    def validate_timezone(self, value: str | None) -> str:
        name = value or "UTC"
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError(
                "Must be an IANA time zone such as Europe/Madrid."
            ) from None
        return name

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        zone = ZoneInfo(attrs["timezone"])
        errors: dict[str, list[str]] = {}
        for name in ("start", "end"):
            value = attrs[name]
            if timezone.is_naive(value):
                value = value.replace(tzinfo=zone)
            if not 1970 <= value.year <= 9998:
                errors[name] = [_DATETIME_HELP]
            attrs[name] = value
        if not errors and attrs["end"] <= attrs["start"]:
            errors["end"] = ["Must be after start."]
        if errors:
            raise serializers.ValidationError(errors)
        attrs["attendees"] = list(attrs.get("attendees") or [])
        return attrs
