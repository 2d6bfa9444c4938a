"""Tenancy, integrations and the audit trail."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Provider(models.TextChoices):
    WHATSAPP = "whatsapp", "WhatsApp (Twilio)"
    SENDGRID = "sendgrid", "SendGrid email"
    TELEGRAM = "telegram", "Telegram bot"
    INSTAGRAM = "instagram", "Instagram messaging"
    GOOGLE_CALENDAR = "google_calendar", "Google Calendar"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


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
