"""Webhook endpoint input: the one validation source for the API and its schema."""

from __future__ import annotations

from rest_framework import serializers

from shared.events.models import WebhookEndpoint
from shared.events.types import EVENT_TYPES
from shared.inputs import OptionalText, StrictCharField


class EventTypeField(serializers.ChoiceField):
    default_error_messages = {
        "invalid_choice": f"Unknown event type. Valid types: {', '.join(EVENT_TYPES)}."
    }

    def __init__(self, **kwargs: object) -> None:
        super().__init__(choices=EVENT_TYPES, **kwargs)

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid_choice")
        return super().to_internal_value(data)


class EndpointCreateSerializer(serializers.Serializer):
    url = StrictCharField(
        max_length=WebhookEndpoint._meta.get_field("url").max_length,
        help_text="https URL that receives the signed events (checked against SSRF rules).",
    )
    events = serializers.ListField(
        child=EventTypeField(),
        required=False,
        allow_empty=True,
        max_length=len(EVENT_TYPES) * 2,
        help_text="Event types to receive; empty or absent means every type.",
    )
    description = OptionalText(max_length=WebhookEndpoint._meta.get_field("description").max_length)

    def validate_events(self, value: list[str]) -> list[str]:
        return sorted(set(value), key=EVENT_TYPES.index)
