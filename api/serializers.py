"""Request and response shapes of the API; secrets are write-only and never serialized."""

from __future__ import annotations

from rest_framework import serializers

from shared.models import AuditEvent, Integration
from shared.validation import MAX_TOKEN_LENGTH


class IntegrationSerializer(serializers.ModelSerializer):
    credentials_rejected = serializers.SerializerMethodField()

    class Meta:
        model = Integration
        fields = [
            "provider",
            "is_active",
            "extra",
            "created_at",
            "updated_at",
            "connected_at",
            "last_tested_at",
            "last_test_ok",
            "last_test_message",
            "credentials_rejected",
            "last_error",
            "last_error_at",
        ]
        read_only_fields = fields

    def get_credentials_rejected(self, obj: Integration) -> bool:
        return obj.credentials_rejected_at is not None


class ConnectSerializer(serializers.Serializer):
    token = serializers.CharField(
        write_only=True, max_length=MAX_TOKEN_LENGTH, trim_whitespace=True
    )
    extra = serializers.DictField(required=False, default=dict)


class EnvelopeSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "error"])
    ok = serializers.BooleanField()
    message = serializers.CharField()


class ErrorEnvelopeSerializer(EnvelopeSerializer):
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False
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
