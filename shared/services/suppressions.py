"""The organization's suppression list by hand: list, add (idempotent) and remove entries.

Entries added automatically (bounces, spam reports, blocked bots, opt-outs) come from
shared.suppressions; these are the API's way in. Adding and removing are audited.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from rest_framework import serializers

from shared.errors import NotFound
from shared.inputs import StrictCharField, validated
from shared.models import Organization, Suppression, SuppressionReason
from shared.providers.registry import MESSAGING_SLUGS
from shared.services.audit import audit_event_record
from shared.suppressions import normalized


class SuppressionCreateSerializer(serializers.Serializer):
    """One entry: the recipient is checked and normalized like a message's `to`."""

    provider = serializers.ChoiceField(
        choices=MESSAGING_SLUGS,
        error_messages={"invalid_choice": f"Must be one of {', '.join(MESSAGING_SLUGS)}."},
    )
    recipient = StrictCharField(max_length=Suppression._meta.get_field("recipient").max_length)
    reason = serializers.ChoiceField(
        choices=SuppressionReason.choices,
        required=False,
        default=SuppressionReason.MANUAL,
        error_messages={"invalid_choice": f"Must be one of {', '.join(SuppressionReason.values)}."},
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            attrs["recipient"] = normalized(attrs["provider"], attrs["recipient"])
        except ValueError as exc:
            raise serializers.ValidationError({"recipient": [str(exc)]}) from None
        return attrs


def suppression_list(*, organization: Organization, provider: str | None = None) -> QuerySet:
    """The organization's entries, newest first (only `provider`'s when given)."""
    entries = Suppression.objects.filter(organization=organization)
    return entries.filter(provider=provider) if provider else entries


def suppression_add(
    *, organization: Organization, data: Any, actor: AbstractBaseUser | None = None
) -> tuple[Suppression, bool]:
    """Add an entry; (entry, created). An existing entry is returned unchanged (created=False)."""
    cleaned = validated(SuppressionCreateSerializer, data)
    with transaction.atomic():
        entry, created = Suppression.objects.get_or_create(
            organization=organization,
            provider=cleaned["provider"],
            recipient=cleaned["recipient"],
            defaults={"reason": cleaned["reason"], "source": "api"},
        )
        if created:
            _audit(entry, "suppression.created", actor)
    return entry, created


@transaction.atomic
def suppression_delete(
    *, organization: Organization, suppression_id: int, actor: AbstractBaseUser | None = None
) -> None:
    """Remove an entry (NotFound also for another organization's); sends to it resume."""
    entry = Suppression.objects.filter(organization=organization, pk=suppression_id).first()
    if entry is None:
        raise NotFound("No such suppression in this organization.")
    _audit(entry, "suppression.deleted", actor)
    entry.delete()


def _audit(entry: Suppression, action: str, actor: Any) -> None:
    audit_event_record(
        organization=entry.organization,
        actor=actor,
        action=action,
        provider=entry.provider,
        data={"suppression_id": entry.pk, "reason": entry.reason},
    )
