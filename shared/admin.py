"""Django admin: tokens can be replaced here (through `integration_connect`) but are never displayed."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from shared.errors import ValidationFailed
from shared.models import AuditEvent, Integration, Membership, Organization
from shared.services.integrations import integration_connect
from shared.validation import validate_extra, validate_token


class IntegrationAdminForm(forms.ModelForm):
    new_token = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the stored token. The current token is never shown.",
    )

    class Meta:
        model = Integration
        fields = ["organization", "provider", "extra", "is_active"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        provider = cleaned.get("provider")
        if not provider:
            return cleaned
        try:
            cleaned["extra"] = validate_extra(provider, cleaned.get("extra") or {})
            if cleaned.get("new_token"):
                cleaned["new_token"] = validate_token(provider, cleaned["new_token"])
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None
        return cleaned


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "organization__slug"]
    raw_id_fields = ["user"]


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    form = IntegrationAdminForm
    list_display = ["organization", "provider", "is_active", "token_stored", "last_test_ok"]
    list_filter = ["provider", "is_active"]
    search_fields = ["organization__slug"]
    readonly_fields = [
        "token_stored",
        "created_at",
        "updated_at",
        "connected_at",
        "last_tested_at",
        "last_test_ok",
        "last_test_message",
        "credentials_rejected_at",
        "last_error_at",
        "last_error",
        "auth_method",
        "token_expires_at",
        "access_token_expires_at",
        "token_refreshed_at",
        "needs_reauth_at",
        "needs_reauth_reason",
    ]

    def save_model(
        self, request: HttpRequest, obj: Integration, form: IntegrationAdminForm, change: bool
    ) -> None:
        """A new token goes through `integration_connect`, as in the API: encrypted, audited as
        `integration.connected`, `connected_at` stamped and a credentials rejection cleared."""
        token = form.cleaned_data.get("new_token")
        if not token:
            super().save_model(request, obj, form, change)
            return
        if change:  # keep this form's other edits; the service then locks and updates the row
            super().save_model(request, obj, form, change)
        connected = integration_connect(
            organization=obj.organization,
            provider=obj.provider,
            token=token,
            extra=obj.extra,
            actor=request.user,
        )
        obj.pk = connected.pk
        obj._state.adding = False
        obj.refresh_from_db()

    @admin.display(boolean=True, description="Token stored")
    def token_stored(self, obj: Integration) -> bool:
        return obj.has_token

    def get_fields(self, request: HttpRequest, obj: Integration | None = None) -> list[str]:
        return [
            "organization",
            "provider",
            "new_token",
            "extra",
            "is_active",
            *self.readonly_fields,
        ]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "organization", "action", "provider", "actor"]
    list_filter = ["action", "provider"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
