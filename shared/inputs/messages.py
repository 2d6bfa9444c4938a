"""Outbound message input: one message and a bulk batch; the destination format and limits
come from the provider spec."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from shared.inputs.content import (
    MAX_MEDIA_URLS,
    MESSAGE_TAGS,
    PARSE_MODES,
    AttachmentSerializer,
    TemplateField,
    check_extras,
    check_text,
)
from shared.inputs.fields import (
    AwareDateTimeField,
    OptionalText,
    StrictBooleanField,
    StrictCharField,
    column,
)
from shared.models import Message
from shared.providers import fields
from shared.providers.registry import MESSAGING_SLUGS, SPECS

SEND_AT_IN_THE_PAST = "Must not be in the past."


def send_at_too_old(value: datetime | None) -> bool:
    """More than SCHEDULE_PAST_TOLERANCE_SECONDS in the past: refused for a new message (the
    services check it once they know the request is not a replay of an existing one)."""
    tolerance = timedelta(seconds=settings.SCHEDULE_PAST_TOLERANCE_SECONDS)
    return value is not None and value < timezone.now() - tolerance


def check_send_at(value: datetime | None) -> datetime | None:
    """`send_at` as sent: at most SCHEDULE_MAX_AHEAD_SECONDS ahead. One in the past means now
    within SCHEDULE_PAST_TOLERANCE_SECONDS; further back it is refused for a new message only
    (send_at_too_old), so replaying a request whose time has passed still finds its message."""
    if value is None:
        return None
    now = timezone.now()
    if value > now + timedelta(seconds=settings.SCHEDULE_MAX_AHEAD_SECONDS):
        days = settings.SCHEDULE_MAX_AHEAD_SECONDS / 86400
        raise serializers.ValidationError(f"Must be at most {days:g} days ahead.")
    return value


class MessageCreateSerializer(serializers.Serializer):
    """One outbound message; the destination format and body limit come from the provider spec."""

    def get_fields(self) -> dict[str, serializers.Field]:
        """Shallow copies of fields built once per class.

        DRF deep-copies every declared field per serializer instance, which re-runs each
        field's __init__ (validators, error messages, the nested attachment serializer): about
        a millisecond per request. These fields keep no per-request state (validation reads
        the data it is given and the field's own settings), so unbound prototypes, built once
        with DRF's own get_fields, are copied instead; each copy is then bound to this
        serializer as usual. A nested child (`attachments`' AttachmentSerializer) is shared,
        as one child already is by every item of a bulk request.
        """
        prototypes = type(self).__dict__.get("_field_prototypes")
        if prototypes is None:
            prototypes = super().get_fields()
            type(self)._field_prototypes = prototypes
        return {name: copy.copy(field) for name, field in prototypes.items()}

    provider = serializers.ChoiceField(
        choices=MESSAGING_SLUGS,
        error_messages={"invalid_choice": f"Must be one of {', '.join(MESSAGING_SLUGS)}."},
    )
    to = StrictCharField(max_length=column(Message, "to"))  # 320: the longest email address
    body = OptionalText()
    subject = OptionalText(max_length=column(Message, "subject"))  # 998: RFC 5322's line limit
    html = OptionalText()
    idempotency_key = StrictCharField(
        required=False,
        allow_null=True,
        default=None,
        max_length=column(Message, "idempotency_key"),
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

    template = TemplateField(
        help_text="WhatsApp: a Twilio Content template; email: a SendGrid dynamic template."
    )
    media_urls = serializers.ListField(
        child=StrictCharField(max_length=2048),
        required=False,
        allow_null=True,
        default=list,
        max_length=MAX_MEDIA_URLS,
        help_text="Public https URLs the provider fetches: WhatsApp (MediaUrl), Telegram "
        "(sendPhoto for images, sendDocument otherwise) and Instagram (attachment). One per "
        "message.",
    )
    attachments = serializers.ListField(
        child=AttachmentSerializer(),
        required=False,
        allow_null=True,
        default=list,
        max_length=settings.MESSAGE_ATTACHMENTS_MAX_COUNT,
        help_text="Email only: files sent with the message; at most "
        f"{settings.MESSAGE_ATTACHMENTS_MAX_COUNT} and "
        f"{settings.MESSAGE_ATTACHMENTS_MAX_BYTES} bytes in all (decoded).",
    )
    parse_mode = serializers.ChoiceField(
        choices=PARSE_MODES,
        required=False,
        allow_null=True,
        default=None,
        help_text="Telegram only: how the text is formatted (the integration's parse_mode when "
        "absent). Escape the text as docs/messages.md shows.",
    )
    tag = serializers.ChoiceField(
        choices=MESSAGE_TAGS,
        required=False,
        allow_null=True,
        default=None,
        help_text="Instagram only: HUMAN_AGENT lets a person reply up to 7 days after the "
        "user's last message (outside the standard 24-hour window).",
    )

    def validate_send_at(self, value: datetime | None) -> datetime | None:
        return check_send_at(value)

    def validate_media_urls(self, value: list[str] | None) -> list[str]:
        errors: dict[int, list[str]] = {}
        for index, url in enumerate(value or []):
            try:
                fields.media_url(url)
            except ValueError as exc:
                errors[index] = [str(exc)]
        if errors:
            raise serializers.ValidationError(errors)
        return list(value or [])

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        provider = attrs["provider"]
        rules = SPECS[provider].messages
        assert rules is not None  # MESSAGING_SLUGS only
        errors: dict[str, list[str]] = {}
        try:
            attrs["to"] = rules.destination(attrs["to"])
        except ValueError as exc:
            errors["to"] = [str(exc)]
        attrs["attachments"] = list(attrs["attachments"] or [])
        check_extras(provider, rules, attrs, errors)
        check_text(provider, rules, attrs, errors)
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
