"""Booking input: what product code sends to sync a booking to the calendar."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils import timezone
from rest_framework import serializers

from shared.inputs.fields import DATETIME_HELP, OptionalText, StrictCharField, column
from shared.models import Booking

MAX_ATTENDEES = 50


class LocalDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date-time left as sent: a naive one is read in the booking's own time zone."""

    default_error_messages = {"invalid": DATETIME_HELP}

    def enforce_timezone(self, value: datetime) -> datetime:
        return value


class BookingRequestSerializer(serializers.Serializer):
    """A booking as product code sends it; start and end without an offset are in `timezone`."""

    summary = StrictCharField(max_length=column(Booking, "summary"))
    description = OptionalText(max_length=8000)
    start = LocalDateTimeField()
    end = LocalDateTimeField()
    timezone = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default="UTC",
        max_length=column(Booking, "timezone"),
    )
    location = OptionalText(max_length=column(Booking, "location"))
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
                errors[name] = [DATETIME_HELP]
            attrs[name] = value
        if not errors and attrs["end"] <= attrs["start"]:
            errors["end"] = ["Must be after start."]
        if errors:
            raise serializers.ValidationError(errors)
        attrs["attendees"] = list(attrs.get("attendees") or [])
        return attrs
