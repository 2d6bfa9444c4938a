"""Outbound messages: create (single, bulk, idempotent) and retry; delivery is shared.delivery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Integration, Message, MessageStatus, Organization, Provider
from shared.services.keys import ensure_token_decrypts
from shared.services.outbox import DELIVER_MESSAGES, message_unpublish, publish_on_commit
from shared.validation import validate_destination

MESSAGING_PROVIDERS = (Provider.WHATSAPP, Provider.SENDGRID, Provider.TELEGRAM, Provider.INSTAGRAM)
BODY_LIMITS = {
    Provider.WHATSAPP: 1600,
    Provider.SENDGRID: 100_000,
    Provider.TELEGRAM: 4096,
    Provider.INSTAGRAM: 999,
}
MAX_KEY_LENGTH = 128


def _clean(provider: Any, to: Any, body: Any, subject: Any, html: Any, key: Any) -> dict[str, Any]:
    """One message's fields, validated; raises ValidationFailed with field-level errors."""
    errors: dict[str, list[str]] = {}
    if provider not in MESSAGING_PROVIDERS:
        raise ValidationFailed(
            "provider: must be one of " + ", ".join(MESSAGING_PROVIDERS) + ".",
            errors={"provider": ["Must be one of " + ", ".join(MESSAGING_PROVIDERS) + "."]},
        )
    cleaned: dict[str, Any] = {"provider": provider}
    try:
        cleaned["to"] = validate_destination(provider, to)
    except ValidationFailed as exc:
        errors.update(exc.errors)
    body = body if body is not None else ""
    subject = subject if subject is not None else ""
    html = html if html is not None else ""
    for name, value in (
        ("body", body),
        ("subject", subject),
        ("html", html),
        ("idempotency_key", key),
    ):
        if name != "idempotency_key" and not isinstance(value, str):
            errors[name] = ["Must be a string."]
        elif isinstance(value, str) and "\x00" in value:
            errors[name] = ["Must not contain NUL characters."]
    if not errors:
        if provider == Provider.SENDGRID:
            if not subject.strip():
                errors["subject"] = ["An email needs a subject."]
            elif len(subject) > 998:
                errors["subject"] = ["Must be at most 998 characters."]
            if not body.strip() and not html.strip():
                errors["body"] = ["An email needs a body or html."]
        else:
            if subject or html:
                errors["subject" if subject else "html"] = [f"{provider} messages are text only."]
            if not body.strip():
                errors["body"] = ["This field is required."]
        if len(body) > BODY_LIMITS[provider] or len(html) > BODY_LIMITS[provider]:
            errors["body"] = [f"Must be at most {BODY_LIMITS[provider]} characters for {provider}."]
    if (
        "idempotency_key" not in errors
        and key is not None
        and (not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH)
    ):
        errors["idempotency_key"] = [f"Must be a string of 1 to {MAX_KEY_LENGTH} characters."]
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"{first}: {errors[first][0]}", errors=errors)
    cleaned.update(body=body, subject=subject, html=html, idempotency_key=key)
    return cleaned


def _active_integrations(organization: Organization, providers: set[str]) -> dict[str, Integration]:
    if not providers:
        return {}
    found = {
        i.provider: i
        for i in Integration.objects.filter(
            organization=organization, provider__in=providers, is_active=True
        ).exclude(token_encrypted="")
    }
    missing = sorted(providers - set(found))
    if missing:
        raise Conflict(
            f"{missing[0]} is not connected for this organization; connect it before sending.",
            errors={"provider": [f"{p} is not connected or inactive." for p in missing]},
        )
    for provider in sorted(found):
        ensure_token_decrypts(found[provider])
    return found


def message_create(
    *,
    organization: Organization,
    provider: str,
    to: str,
    body: str = "",
    subject: str = "",
    html: str = "",
    idempotency_key: str | None = None,
) -> tuple[Message, bool]:
    """Write one outbound message to the outbox and enqueue it on commit.

    Returns (message, created). The same idempotency key again returns the existing message
    with created=False and enqueues nothing. Raises ValidationFailed or Conflict (not connected).
    """
    results = message_create_bulk(
        organization=organization,
        items=[
            {
                "provider": provider,
                "to": to,
                "body": body,
                "subject": subject,
                "html": html,
                "idempotency_key": idempotency_key,
            }
        ],
        _single=True,
    )
    return results[0]


def message_create_bulk(
    *, organization: Organization, items: Sequence[Mapping[str, Any]], _single: bool = False
) -> list[tuple[Message, bool]]:
    """Validate every item, then write all new messages in one transaction and enqueue them.

    Errors are reported by index (`messages.<i>.<field>`) and nothing is written. Items whose
    idempotency key already exists return the existing message (created=False).
    """
    if not items:
        raise ValidationFailed(
            "messages: at least one message is required.",
            errors={"messages": ["Must not be empty."]},
        )
    if len(items) > settings.BULK_MAX_MESSAGES:
        raise ValidationFailed(
            f"messages: at most {settings.BULK_MAX_MESSAGES} messages per request.",
            errors={"messages": [f"At most {settings.BULK_MAX_MESSAGES} messages per request."]},
        )
    cleaned: list[dict[str, Any]] = []
    errors: dict[str, list[str]] = {}
    seen_keys: dict[str, int] = {}
    for index, item in enumerate(items):
        prefix = "" if _single else f"messages.{index}."
        if not isinstance(item, Mapping):
            errors[f"messages.{index}"] = ["Must be an object."]
            continue
        try:
            row = _clean(
                item.get("provider"),
                item.get("to"),
                item.get("body"),
                item.get("subject"),
                item.get("html"),
                item.get("idempotency_key"),
            )
        except ValidationFailed as exc:
            errors.update({prefix + k: v for k, v in exc.errors.items()})
            continue
        key = row["idempotency_key"]
        if key is not None:
            if key in seen_keys:
                errors[prefix + "idempotency_key"] = [
                    f"Repeats the key of message {seen_keys[key]} in this request."
                ]
                continue
            seen_keys[key] = index
        cleaned.append(row)
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"{first}: {errors[first][0]}", errors=errors)

    keys = [row["idempotency_key"] for row in cleaned if row["idempotency_key"] is not None]
    for _ in range(2):  # a concurrent request may insert the same key between read and write
        existing = (
            {
                m.idempotency_key: m
                for m in Message.objects.filter(organization=organization, idempotency_key__in=keys)
            }
            if keys
            else {}
        )
        new_providers = {r["provider"] for r in cleaned if r["idempotency_key"] not in existing}
        integrations = _active_integrations(organization, new_providers)
        try:
            return _insert(organization, cleaned, integrations, existing)
        except IntegrityError:
            continue
    raise Conflict("The idempotency key is being used by a concurrent request; try again.")


@transaction.atomic
def _insert(
    organization: Organization,
    cleaned: list[dict[str, Any]],
    integrations: dict[str, Integration],
    existing: dict[str, Message],
) -> list[tuple[Message, bool]]:
    now = timezone.now()
    new = [
        Message(
            organization=organization,
            integration=integrations[row["provider"]],
            provider=row["provider"],
            to=row["to"],
            body=row["body"],
            subject=row["subject"],
            html=row["html"],
            idempotency_key=row["idempotency_key"],
            next_attempt_at=now,
            enqueued_at=now,
        )
        for row in cleaned
        if row["idempotency_key"] not in existing
    ]
    created = Message.objects.bulk_create(new, batch_size=1000)
    publish_on_commit(DELIVER_MESSAGES, [m.pk for m in created], on_failure=message_unpublish)
    created_iter = iter(created)
    return [
        (existing[row["idempotency_key"]], False)
        if row["idempotency_key"] in existing
        else (next(created_iter), True)
        for row in cleaned
    ]


def message_retry(*, organization: Organization, message_id: int) -> Message:
    """Put a failed message back in the outbox for a fresh round of attempts."""
    with transaction.atomic():
        message = _message_for_update(organization, message_id)
        if message.status != MessageStatus.FAILED:
            raise Conflict(f"Only failed messages can be retried; this one is {message.status}.")
        integration = message.integration
        if not integration.is_active or not integration.token_encrypted:
            raise Conflict(f"{message.provider} is not connected for this organization.")
        ensure_token_decrypts(integration)
        now = timezone.now()
        message.status = MessageStatus.QUEUED
        message.retries = 0
        message.next_attempt_at = now
        message.enqueued_at = now
        message.failed_at = None
        message.last_error = ""
        message.error_kind = ""
        message.error_code = ""
        message.save()
        publish_on_commit(DELIVER_MESSAGES, [message.pk], on_failure=message_unpublish)
    return message


def _message_for_update(organization: Organization, message_id: int) -> Message:
    try:
        return (
            Message.objects.select_for_update(of=("self",))
            .select_related("integration")
            .get(organization=organization, pk=message_id)
        )
    except Message.DoesNotExist:
        raise NotFound("Message not found.") from None


def send_message(
    org: Organization | int,
    provider: str,
    to: str,
    body: str = "",
    *,
    subject: str = "",
    html: str = "",
    idempotency_key: str | None = None,
) -> Message:
    """Product-code entry point: exactly what POST /api/messages/ does; returns the message row."""
    organization = org if isinstance(org, Organization) else Organization.objects.get(pk=org)
    message, _ = message_create(
        organization=organization,
        provider=provider,
        to=to,
        body=body,
        subject=subject,
        html=html,
        idempotency_key=idempotency_key,
    )
    return message
