"""Webhook endpoints of an organization, the events emitted to them and one delivery per pair."""

from __future__ import annotations

import secrets

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


def new_event_id() -> str:
    """`evt_` + 26 URL-safe random characters: the event's `webhook-id`, constant across retries."""
    return "evt_" + secrets.token_urlsafe(20)[:26]


class WebhookEndpoint(models.Model):
    """A URL of the organization's that receives signed events; secrets only as Fernet ciphertext.

    After a rotation the previous secret keeps signing (a second `v1,` signature) until
    `previous_secret_expires_at`. `failing_since` is the start of the current failure streak.
    """

    organization = models.ForeignKey(
        "shared.Organization", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True, default="")
    events = models.JSONField(default=list, blank=True)  # event types; empty = every type
    secret_encrypted = models.TextField()
    previous_secret_encrypted = models.TextField(blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        # emit()'s one SELECT (organization_id = ? AND disabled_at IS NULL) uses the
        # foreign key's index on organization_id: an organization has a few endpoints at most.

    def __str__(self) -> str:
        return f"webhook endpoint {self.pk} of {self.organization_id}"

    def subscribes_to(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class Event(models.Model):
    """One thing that happened in an organization, as sent to its endpoints (never a secret)."""

    organization = models.ForeignKey(
        "shared.Organization", on_delete=models.CASCADE, related_name="+"
    )
    public_id = models.CharField(max_length=40, unique=True, default=new_event_id)
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} {self.type}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # due at next_attempt_at
    SENDING = "sending", "Sending"  # claimed by a worker until lease_expires_at
    DELIVERED = "delivered", "Delivered"  # the endpoint answered 2xx
    FAILED = "failed", "Failed"  # out of attempts, or its endpoint was disabled


class EventDelivery(models.Model):
    """One event to one endpoint: the outbox row (the truth) and its delivery log."""

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)  # NULL = publish pending
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_response = models.TextField(blank=True, default="")  # the first 4 KB of the answer
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="event_delivery_log"),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["pending", "sending"]),
                name="event_delivery_pending_due",
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event_id} to {self.endpoint_id} ({self.status})"
