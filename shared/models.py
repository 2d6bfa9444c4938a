"""Tenancy, integrations and the audit trail."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.db import models

from shared.providers.registry import SPECS

# The provider choices (Provider.WHATSAPP, ...) come from the provider specs, so the API schema's
# enums follow shared/providers/ (a new provider's choice needs a makemigrations, nothing else).
Provider = models.TextChoices(
    "Provider", [(spec.slug.upper(), (spec.slug, spec.label)) for spec in SPECS.values()]
)


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class AuthMethod(models.TextChoices):
    PASTED = "pasted", "Pasted"
    OAUTH = "oauth", "OAuth"


class Organization(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique_pair")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


def new_webhook_key() -> str:
    """43 URL-safe characters of randomness (256 bits)."""
    return secrets.token_urlsafe(32)


class Integration(models.Model):
    """One provider connection of one organization; the token is stored only as Fernet ciphertext."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="integrations"
    )
    provider = models.CharField(max_length=32, choices=Provider.choices)
    token_encrypted = models.TextField(blank=True, default="")
    extra = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Read-only status for the Settings UI.
    connected_at = models.DateTimeField(null=True, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.CharField(max_length=500, blank=True, default="")
    credentials_rejected_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    # Set while the stored token decrypts with no FERNET_KEY (an operator dropped its key):
    # sends are refused with 503 and queued work waits, instead of failing as rejected.
    key_unavailable_at = models.DateTimeField(null=True, blank=True)
    # The opaque, unguessable id in this integration's receipt URLs (/webhooks/<provider>/<key>/…).
    webhook_key = models.CharField(max_length=64, unique=True, default=new_webhook_key)
    # How the token came: pasted (`pasted`) or through "Connect with …" (`oauth`, docs/oauth.md).
    # With OAuth, Google's `token_encrypted` is the refresh token and Instagram's the
    # long-lived access token; `token_expires_at` is that token's expiry when the provider
    # says it (Instagram: 60 days, renewed by beat).
    auth_method = models.CharField(max_length=16, choices=AuthMethod.choices, default="pasted")
    token_expires_at = models.DateTimeField(null=True, blank=True)
    # Google: the last access token a refresh gave (Fernet), reused by every task until it
    # nears its expiry instead of one token call per task.
    access_token_encrypted = models.TextField(blank=True, default="")
    access_token_expires_at = models.DateTimeField(null=True, blank=True)
    token_refreshed_at = models.DateTimeField(null=True, blank=True)
    # Set when the provider refused the refresh token or the token itself for good
    # (invalid_grant, revoked, expired): sends stop calling the provider until a person
    # connects again.
    needs_reauth_at = models.DateTimeField(null=True, blank=True)
    needs_reauth_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "provider"], name="integration_unique_org_provider"
            )
        ]
        ordering = ["provider"]

    def __str__(self) -> str:
        return f"{self.organization}/{self.provider}"

    @property
    def has_token(self) -> bool:
        return bool(self.token_encrypted)


class OAuthState(models.Model):
    """One started "Connect with …" flow: single use, short-lived, bound to the organization,
    the admin who started it, the browser that started it and (Google) the PKCE verifier.

    Only SHA-256 digests of the `state` value and of the browser cookie are stored; the
    verifier is Fernet ciphertext."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    state_digest = models.CharField(max_length=64, unique=True)
    browser_digest = models.CharField(max_length=64)
    verifier_encrypted = models.TextField(blank=True, default="")
    extra = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="oauth_state_expiry")]

    def __str__(self) -> str:
        return f"oauth state {self.pk} {self.provider} for {self.organization_id}"


class AuditEvent(models.Model):
    """A persisted audit record; the same fields go to the `corbi.audit` logger as JSON."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64)
    provider = models.CharField(max_length=32, blank=True, default="")
    token_fingerprint = models.CharField(max_length=32, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="audit_org_time")]

    def __str__(self) -> str:
        return f"{self.action} {self.organization} {self.created_at:%Y-%m-%d %H:%M:%S}"


class MessageStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"  # waits for its send_at (next_attempt_at), then queued
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"  # the provider accepted it (final for Telegram: no receipts there)
    # From the provider's receipts (shared/receipts/), after `sent`; they only move forward.
    DELIVERED = "delivered", "Delivered"
    READ = "read", "Read"
    UNDELIVERED = "undelivered", "Undelivered"  # accepted, then not delivered (e.g. 63016)
    BOUNCED = "bounced", "Bounced"  # email: refused by the recipient's server
    FAILED = "failed", "Failed"  # refused by the provider, or out of attempts
    CANCELLED = "cancelled", "Cancelled"  # cancelled before a send started (final)


class Message(models.Model):
    """An outbound message; the row is the outbox and the source of truth for every send."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="messages"
    )
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="messages")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    to = models.CharField(max_length=320)
    subject = models.CharField(max_length=998, blank=True, default="")
    body = models.TextField(blank=True, default="")
    html = models.TextField(blank=True, default="")
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001 - NULL = no key (unique only when set)
    status = models.CharField(
        max_length=16, choices=MessageStatus.choices, default=MessageStatus.QUEUED
    )
    attempts = models.PositiveIntegerField(default=0)  # provider calls started
    retries = models.PositiveIntegerField(default=0)
    # Instagram message ids run past 150 characters.
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    last_error = models.CharField(max_length=500, blank=True, default="")
    error_kind = models.CharField(max_length=32, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    # Scheduling: due time, the moment a task was last published (NULL = publish pending),
    # the lease of a claimed send, and a rate-limit slot already booked for this message.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    rate_slot_at = models.DateTimeField(null=True, blank=True)
    # When the current claim's provider call started (NULL = claimed, call not started): only a
    # started call counts in `attempts`, so only it can count as interrupted by a crash.
    send_started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    # A transactional message (a receipt, a password reset) may also ignore the suppression list.
    transactional = models.BooleanField(default=False)
    ignore_suppression = models.BooleanField(default=False)
    # The send time the request asked for (NULL = at once); compared for idempotency replays.
    send_at = models.DateTimeField(null=True, blank=True)
    # What the message carries beyond text, as validated (NULL: plain text): `template`,
    # `media_urls`, `parse_mode`, `tag`, and the attachments' `filename`/`type`/`disposition`/
    # `content_id`/`size`. Their base64 contents are in `attachments_encrypted` (Fernet).
    content = models.JSONField(null=True, blank=True, default=None)
    attachments_encrypted = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="message_unique_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="message_org_time"),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["queued", "sending"]),
                name="message_pending_due",
            ),
            # The sweeper's pick-up of scheduled rows that fell due.
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="scheduled"),
                name="message_scheduled_due",
            ),
        ]

    def __str__(self) -> str:
        return f"message {self.pk} {self.provider} {self.status}"

    def _content(self, name: str, default: Any = None) -> Any:
        return (self.content or {}).get(name, default)

    @property
    def template(self) -> dict[str, Any] | None:
        return self._content("template")

    @property
    def media_urls(self) -> list[str]:
        return self._content("media_urls", [])

    @property
    def parse_mode(self) -> str | None:
        return self._content("parse_mode")

    @property
    def tag(self) -> str | None:
        return self._content("tag")

    @property
    def attachments(self) -> list[dict[str, Any]]:
        """The attachments' descriptions (never their contents)."""
        return self._content("attachments", [])


class MessageAttempt(models.Model):
    """One provider call for a message (an attempt interrupted by a crash leaves a gap in `number`)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=32)
    provider_code = models.CharField(max_length=64, blank=True, default="")
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of message {self.message_id}: {self.outcome}"


class BookingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SYNCING = "syncing", "Syncing"
    SYNCED = "synced", "Synced"
    FAILED = "failed", "Failed"


class MessageEvent(models.Model):
    """One provider receipt for a message (delivered, read, bounced, …), stored as it came.

    `provider_event_id` makes a receipt idempotent: providers retry and repeat callbacks.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="events")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    provider_event_id = models.CharField(max_length=300)
    # The provider's id of the send this receipt is about: a receipt that came before its send
    # was recorded is applied only if it names the send that was (not an earlier attempt).
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    provider_status = models.CharField(max_length=64)
    status = models.CharField(max_length=16, blank=True, default="")  # a MessageStatus, or ""
    error_code = models.CharField(max_length=64, blank=True, default="")
    reason = models.CharField(max_length=500, blank=True, default="")
    occurred_at = models.DateTimeField(null=True, blank=True)  # the provider's time
    received_at = models.DateTimeField(auto_now_add=True)
    # True: it moved the message's status; False: it did not (older, repeated or informational);
    # None: it came before the worker recorded the send, and is applied once that happens.
    applied = models.BooleanField(null=True, default=False)
    # The receipt's own fields needed to debug it (never a signature or a secret).
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message", "provider_event_id"], name="message_event_unique"
            )
        ]
        indexes = [
            models.Index(
                fields=["received_at"],
                condition=models.Q(applied__isnull=True),
                name="message_event_pending",
            )
        ]
        ordering = ["occurred_at", "id"]

    def __str__(self) -> str:
        return f"{self.provider} {self.provider_status} for message {self.message_id}"


class UnmatchedReceipt(models.Model):
    """A receipt naming a provider message id not recorded yet (it came while the worker was
    still recording the send): matched again by the sweeper for RECEIPT_MATCH_WINDOW_SECONDS,
    then dropped as unknown."""

    integration_ids = models.JSONField(default=list)
    receipt = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"unmatched {self.receipt.get('provider')} receipt {self.pk}"


class SuppressionReason(models.TextChoices):
    BOUNCE = "bounce", "Hard bounce"
    SPAMREPORT = "spamreport", "Spam report"
    UNSUBSCRIBE = "unsubscribe", "Unsubscribed"
    BLOCKED = "blocked", "Blocked the sender"
    OPT_OUT = "opt_out", "Opted out"
    MANUAL = "manual", "Added by hand"


class Suppression(models.Model):
    """A recipient this organization must not send to through this provider (shared.suppressions).

    `recipient` is normalized like a message's `to` (the provider spec's destination check).
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="suppressions"
    )
    provider = models.CharField(max_length=32, choices=Provider.choices)
    recipient = models.CharField(max_length=320)
    reason = models.CharField(max_length=16, choices=SuppressionReason.choices)
    source = models.CharField(max_length=500, blank=True, default="")  # what added it
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "provider", "recipient"], name="suppression_unique"
            )
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.organization}/{self.provider} {self.reason}"


class Booking(models.Model):
    """A booking mirrored to the org's Google Calendar under a deterministic event id."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="bookings"
    )
    booking_id = models.CharField(max_length=128)
    event_id = models.CharField(max_length=128)
    summary = models.CharField(max_length=500)
    description = models.TextField(blank=True, default="")
    location = models.CharField(max_length=500, blank=True, default="")
    start = models.DateTimeField()
    end = models.DateTimeField()
    timezone = models.CharField(max_length=64, blank=True, default="UTC")
    attendees = models.JSONField(default=list, blank=True)
    cancelled = models.BooleanField(default=False)
    # `version` bumps on every change; `synced_version` is the version the calendar reflects.
    version = models.PositiveIntegerField(default=1)
    synced_version = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=BookingStatus.choices, default=BookingStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "booking_id"], name="booking_unique_org_id"
            )
        ]

    def __str__(self) -> str:
        return f"booking {self.booking_id} ({self.status})"


# The events-out models live in their own module; imported here so the `shared` app has them.
from shared.events.models import (  # noqa: E402, F401
    DeliveryStatus,
    Event,
    EventDelivery,
    WebhookEndpoint,
)
