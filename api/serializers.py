"""Response shapes of the API (message and booking input: shared.inputs); secrets are write-only
and never serialized."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.exceptions import ErrorCode
from shared.inputs import TEMPLATE_SCHEMA, StrictCharField
from shared.models import AuditEvent, AuthMethod, Booking, Integration, Message, MessageEvent
from shared.receipts.urls import receipts_url
from shared.validation import MAX_TOKEN_LENGTH


class IntegrationStatus:
    CONNECTED = "connected"
    NEEDS_REAUTH = "needs_reauth"
    CREDENTIALS_REJECTED = "credentials_rejected"
    DISCONNECTED = "disconnected"
    CHOICES = (CONNECTED, NEEDS_REAUTH, CREDENTIALS_REJECTED, DISCONNECTED)


class IntegrationSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()
    status_reason = serializers.SerializerMethodField()
    credentials_rejected = serializers.SerializerMethodField()
    connection_expires_at = serializers.DateTimeField(
        source="token_expires_at",
        read_only=True,
        allow_null=True,
        help_text="When the stored credential expires, when the provider says so (Instagram's "
        "60-day token, renewed by beat); null otherwise.",
    )
    key_unavailable = serializers.SerializerMethodField()
    receipts_url = serializers.SerializerMethodField()

    class Meta:
        model = Integration
        fields = [
            "provider",
            "is_active",
            "status",
            "status_reason",
            "auth_method",
            "connection_expires_at",
            "extra",
            "created_at",
            "updated_at",
            "connected_at",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "credentials_rejected",
            "key_unavailable",
            "receipts_url",
            "last_error",
            "last_error_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=IntegrationStatus.CHOICES))
    def get_status(self, obj: Integration) -> str:
        """connected; needs_reauth (the provider refused the OAuth token for good: connect
        again); credentials_rejected (a pasted token was refused); disconnected."""
        if not obj.is_active or not obj.token_encrypted:
            return IntegrationStatus.DISCONNECTED
        if obj.needs_reauth_at is not None or (
            obj.credentials_rejected_at is not None and obj.auth_method == AuthMethod.OAUTH
        ):
            return IntegrationStatus.NEEDS_REAUTH
        if obj.credentials_rejected_at is not None:
            return IntegrationStatus.CREDENTIALS_REJECTED
        return IntegrationStatus.CONNECTED

    def get_status_reason(self, obj: Integration) -> str:
        """Why the status is not `connected`, in one sentence ("" when it is)."""
        status = self.get_status(obj)
        if status == IntegrationStatus.NEEDS_REAUTH:
            return obj.needs_reauth_reason or obj.last_error
        if status == IntegrationStatus.CREDENTIALS_REJECTED:
            return obj.last_error or obj.last_test_message
        return ""

    def get_credentials_rejected(self, obj: Integration) -> bool:
        return obj.credentials_rejected_at is not None

    def get_receipts_url(self, obj: Integration) -> str | None:
        """Where the provider sends delivery receipts (SendGrid: paste it as the Event Webhook
        URL); null when the provider has none or PUBLIC_BASE_URL is not set."""
        return receipts_url(obj)

    def get_key_unavailable(self, obj: Integration) -> bool:
        """The stored secret decrypts with no FERNET_KEY: an operator must restore the key."""
        return obj.key_unavailable_at is not None


class ConnectSerializer(serializers.Serializer):
    token = StrictCharField(write_only=True, max_length=MAX_TOKEN_LENGTH, trim_whitespace=True)
    extra = serializers.DictField(required=False, default=dict)


class EnvelopeSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "error"])
    ok = serializers.BooleanField()
    message = serializers.CharField()


class ErrorEnvelopeSerializer(EnvelopeSerializer):
    """The body of every /api/ error, with `status` "error" and `ok` false; see docs/errors.md."""

    code = serializers.ChoiceField(
        choices=ErrorCode.choices,
        help_text="Stable machine-readable reason; branch on this, not on `message`.",
    )
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Field path (`messages.3.body`, `extra.from_email`) to its messages.",
    )
    retry_after = serializers.IntegerField(
        required=False, help_text="Seconds to wait before trying again (429 only)."
    )


class ConnectResponseSerializer(EnvelopeSerializer):
    integration = IntegrationSerializer()


class AuditEventSerializer(serializers.ModelSerializer):
    user = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "action", "provider", "user", "token_fingerprint", "data", "created_at"]
        read_only_fields = fields

    def get_user(self, obj: AuditEvent) -> str | None:
        return obj.actor.get_username() if obj.actor_id else None


class ConnectionTestSerializer(serializers.Serializer):
    extra = serializers.DictField(required=False, default=dict)


class ConnectionTestResponseSerializer(EnvelopeSerializer):
    checks = serializers.DictField()
    integration = IntegrationSerializer()


class MessageAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField()
    outcome = serializers.CharField()
    provider_code = serializers.CharField()
    error = serializers.CharField()


@extend_schema_field(TEMPLATE_SCHEMA)
class TemplateOutField(serializers.JSONField):
    """The message's template as validated (null without one)."""


class AttachmentInfoSerializer(serializers.Serializer):
    """An attachment as stored: its description, never its content."""

    filename = serializers.CharField()
    type = serializers.CharField()
    disposition = serializers.CharField()
    content_id = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes, decoded.")


class MessageSerializer(serializers.ModelSerializer):
    template = TemplateOutField(read_only=True)
    media_urls = serializers.ListField(child=serializers.CharField(), read_only=True)
    attachments = AttachmentInfoSerializer(many=True, read_only=True)
    parse_mode = serializers.CharField(read_only=True, allow_null=True)
    tag = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "provider",
            "to",
            "subject",
            "body",
            "html",
            "template",
            "media_urls",
            "attachments",
            "parse_mode",
            "tag",
            "idempotency_key",
            "transactional",
            "ignore_suppression",
            "status",
            "attempts",
            "provider_message_id",
            "last_error",
            "error_kind",
            "error_code",
            "next_attempt_at",
            "send_at",
            "created_at",
            "updated_at",
            "sent_at",
            "failed_at",
        ]
        read_only_fields = fields


_DATETIME = serializers.DateTimeField()
_MESSAGE_TEXT = ("provider", "to", "subject", "body", "html")
_MESSAGE_ERRORS = ("provider_message_id", "last_error", "error_kind", "error_code")
_MESSAGE_TIMES = ("next_attempt_at", "send_at", "created_at", "updated_at", "sent_at", "failed_at")


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def message_data(message: Message) -> dict[str, Any]:
    """Exactly `MessageSerializer(message).data`, without building a serializer: the hot path of
    POST /api/messages/ (a ModelSerializer introspects the model and copies its fields per
    instance). MessageSerializer stays the documented shape (the schema); a test holds the two
    equal, field by field, for every kind of message."""
    data: dict[str, Any] = {"id": message.pk}
    for name in _MESSAGE_TEXT:
        data[name] = _text(getattr(message, name))
    content = message.content or {}
    data["template"] = content.get("template")
    data["media_urls"] = [_text(url) for url in content.get("media_urls", [])]
    data["attachments"] = [
        {
            "filename": str(item["filename"]),
            "type": str(item["type"]),
            "disposition": str(item["disposition"]),
            "content_id": str(item["content_id"]),
            "size": int(item["size"]),
        }
        for item in content.get("attachments", [])
    ]
    data["parse_mode"] = _text(content.get("parse_mode"))
    data["tag"] = _text(content.get("tag"))
    data["idempotency_key"] = _text(message.idempotency_key)
    data["transactional"] = bool(message.transactional)
    data["ignore_suppression"] = bool(message.ignore_suppression)
    data["status"] = _text(message.status)
    data["attempts"] = int(message.attempts)
    for name in _MESSAGE_ERRORS:
        data[name] = _text(getattr(message, name))
    for name in _MESSAGE_TIMES:
        data[name] = _DATETIME.to_representation(getattr(message, name))
    return data


class MessageEventSerializer(serializers.ModelSerializer):
    """One provider receipt: `status` is what it means for the message ("" when informational),
    `applied` whether it moved the message (null: waiting for the send to be recorded)."""

    class Meta:
        model = MessageEvent
        fields = [
            "provider_status",
            "status",
            "error_code",
            "reason",
            "occurred_at",
            "received_at",
            "applied",
            "raw",
        ]
        read_only_fields = fields


class MessageDetailSerializer(MessageSerializer):
    attempt_log = MessageAttemptSerializer(source="attempt_set", many=True, read_only=True)
    interrupted_attempts = serializers.SerializerMethodField()
    events = MessageEventSerializer(many=True, read_only=True)

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "attempt_log", "interrupted_attempts", "events"]
        read_only_fields = fields

    def get_interrupted_attempts(self, obj: Message) -> int:
        """Provider calls that started but never recorded an outcome (a worker died mid-call);
        `attempts` counts only started calls, so a claim that never sent is not one."""
        finished = len(obj.attempt_set.all())
        in_flight = 1 if obj.status == "sending" and obj.send_started_at is not None else 0
        return max(obj.attempts - finished - in_flight, 0)


class MessageCreatedSerializer(EnvelopeSerializer):
    message_id = serializers.IntegerField()
    data = MessageSerializer()


class BulkItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    created = serializers.BooleanField()


class BulkResponseSerializer(EnvelopeSerializer):
    created = serializers.IntegerField()
    existing = serializers.IntegerField()
    messages = BulkItemSerializer(many=True)


class BookingSerializer(serializers.ModelSerializer):
    class Meta:
        model = Booking
        fields = [
            "booking_id",
            "event_id",
            "summary",
            "description",
            "location",
            "start",
            "end",
            "timezone",
            "attendees",
            "cancelled",
            "status",
            "version",
            "synced_version",
            "attempts",
            "last_error",
            "synced_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
