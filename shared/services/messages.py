"""Outbound messages: create (single, bulk, idempotent) and retry; delivery is shared.delivery."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from shared.crypto import decrypt_data, encrypt_data
from shared.errors import (
    Conflict,
    IdempotencyKeyReused,
    MessageNotCancellable,
    NotFound,
    ValidationFailed,
    first_error,
)
from shared.events.announce import messages_changed
from shared.inputs import (
    SEND_AT_IN_THE_PAST,
    MessageBulkSerializer,
    MessageCreateSerializer,
    send_at_too_old,
    validated,
)
from shared.models import Integration, Message, MessageStatus, Organization
from shared.providers.registry import SPECS
from shared.services.copy_insert import copy_insert
from shared.services.keys import ensure_token_decrypts
from shared.services.outbox import (
    DELIVER_MESSAGES,
    message_unpublish,
    publish_later_on_commit,
    publish_on_commit,
)


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


def message_create(*, organization: Organization, data: Mapping[str, Any]) -> tuple[Message, bool]:
    """Write one outbound message to the outbox and enqueue it on commit.

    `data` holds the fields of MessageCreateSerializer. Returns (message, created): the same
    idempotency key with the same request returns the existing message with created=False and
    enqueues nothing. Raises ValidationFailed (errors by field), IdempotencyKeyReused (the key
    names a message with other content) or Conflict (not connected).
    """
    return _store(organization, [validated(MessageCreateSerializer, data)], bulk=False)[0]


def message_create_bulk(
    *, organization: Organization, data: Mapping[str, Any]
) -> list[tuple[Message, bool]]:
    """Validate every item of `data["messages"]`, then write all new messages in one transaction
    and enqueue them.

    Errors are reported by index (`messages.<i>.<field>`) and nothing is written. Items whose
    idempotency key already exists with the same request return the existing message
    (created=False); one whose key names a message with other content fails the whole request.
    """
    return _store(organization, validated(MessageBulkSerializer, data)["messages"], bulk=True)


def _store(
    organization: Organization, cleaned: list[dict[str, Any]], *, bulk: bool
) -> list[tuple[Message, bool]]:
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
        _refuse_reused_keys(cleaned, existing, bulk=bulk)
        _refuse_past_send_at(cleaned, existing, bulk=bulk)
        new_providers = {r["provider"] for r in cleaned if r["idempotency_key"] not in existing}
        integrations = _active_integrations(organization, new_providers)
        try:
            return _insert(organization, cleaned, integrations, existing)
        except IntegrityError:
            continue
    raise Conflict("The idempotency key is being used by a concurrent request; try again.")


# What makes two requests with one idempotency key the same request (validated, normalized):
# these columns, and what the message carries beyond text (CONTENT_FIELDS, attachments'
# contents included).
COMPARED_FIELDS = ("provider", "to", "body", "subject", "html", "send_at")
CONTENT_FIELDS = ("template", "media_urls", "parse_mode", "tag", "attachments")
_ATTACHMENT_INFO = ("filename", "type", "disposition", "content_id", "size")


def message_content(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `content` column of a validated request: only what it sets (None: plain text)."""
    content: dict[str, Any] = {}
    for name in ("template", "parse_mode", "tag"):
        if row[name] is not None:
            content[name] = row[name]
    if row["media_urls"]:
        content["media_urls"] = list(row["media_urls"])
    if row["attachments"]:
        content["attachments"] = [
            {key: item[key] for key in _ATTACHMENT_INFO} for item in row["attachments"]
        ]
    return content or None


def encrypted_attachments(attachments: Sequence[Mapping[str, Any]]) -> str:
    """The attachments' base64 contents, in order, as one Fernet token ("" when none)."""
    if not attachments:
        return ""
    return encrypt_data(json.dumps([item["content"] for item in attachments]))


def attachment_contents(message: Message) -> list[str]:
    """The base64 contents of `message`'s attachments, in order (decrypted here, per use)."""
    if not message.attachments_encrypted:
        return []
    return json.loads(decrypt_data(message.attachments_encrypted))


def _refuse_reused_keys(
    cleaned: list[dict[str, Any]], existing: dict[str, Message], *, bulk: bool
) -> None:
    """Raise IdempotencyKeyReused, naming each item, when a key names a different message."""
    errors: dict[str, list[str]] = {}
    for index, row in enumerate(cleaned):
        message = existing.get(row["idempotency_key"])
        differs = [] if message is None else differing_fields(message, row)
        if differs:
            path = f"messages.{index}.idempotency_key" if bulk else "idempotency_key"
            errors[path] = [
                f"Already used for message {message.pk} with a different {', '.join(differs)}; "
                "send a new key for a new message."
            ]
    if errors:
        raise IdempotencyKeyReused(first_error(errors), errors=errors)


def _refuse_past_send_at(
    cleaned: list[dict[str, Any]], existing: dict[str, Message], *, bulk: bool
) -> None:
    """Raise ValidationFailed naming each new message whose send_at is too far in the past (a
    replay of an existing message keeps its 200, however old its send_at)."""
    errors = {
        (f"messages.{index}.send_at" if bulk else "send_at"): [SEND_AT_IN_THE_PAST]
        for index, row in enumerate(cleaned)
        if row["idempotency_key"] not in existing and send_at_too_old(row["send_at"])
    }
    if errors:
        raise ValidationFailed(first_error(errors), errors=errors)


def differing_fields(message: Message, row: Mapping[str, Any]) -> list[str]:
    """The COMPARED_FIELDS in which the validated request `row` differs from `message`.

    The row holds what the request was validated into, so it compares directly with the stored
    columns. A destination stored by an older, laxer check (an email domain not yet lower-cased)
    is normalized by today's check before it is compared.
    """
    differs = [name for name in COMPARED_FIELDS if getattr(message, name) != row[name]]
    stored, sent = message.content or {}, message_content(row) or {}
    differs += [name for name in CONTENT_FIELDS if stored.get(name) != sent.get(name)]
    if "attachments" not in differs and sent.get("attachments"):
        if attachment_contents(message) != [item["content"] for item in row["attachments"]]:
            differs.append("attachments")
    if "to" in differs and message.provider == row["provider"]:
        rules = SPECS[message.provider].messages
        try:
            same = rules is not None and rules.destination(message.to) == row["to"]
        except ValueError:
            same = False
        if same:
            differs.remove("to")
    return differs


def _new_message(
    organization: Organization, integration: Integration, row: dict[str, Any], now: datetime
) -> Message:
    """The unsaved row of one validated request: queued and due now, or `scheduled` and due at
    a future `send_at` (published now, with an ETA, only within MAX_COUNTDOWN_SECONDS;
    otherwise `enqueued_at` stays NULL and the sweeper publishes it once it is due)."""
    send_at = row["send_at"]
    scheduled = send_at is not None and send_at > now
    soon = not scheduled or (send_at - now).total_seconds() <= settings.MAX_COUNTDOWN_SECONDS
    return Message(
        organization=organization,
        integration=integration,
        provider=row["provider"],
        to=row["to"],
        body=row["body"],
        subject=row["subject"],
        html=row["html"],
        idempotency_key=row["idempotency_key"],
        send_at=send_at,
        transactional=row["transactional"],
        ignore_suppression=row["ignore_suppression"],
        content=message_content(row),
        attachments_encrypted=encrypted_attachments(row["attachments"]),
        status=MessageStatus.SCHEDULED if scheduled else MessageStatus.QUEUED,
        next_attempt_at=send_at if scheduled else now,
        enqueued_at=now if soon else None,
    )


def _insert(
    organization: Organization,
    cleaned: list[dict[str, Any]],
    integrations: dict[str, Integration],
    existing: dict[str, Message],
) -> list[tuple[Message, bool]]:
    """Insert the new messages and publish them once they are committed.

    One new message outside any transaction is one INSERT in autocommit (a single statement is
    atomic by itself; `bulk_create` and `atomic` would add BEGIN and COMMIT round trips), and
    `publish_on_commit` then publishes at once, after the row is committed, as before. Several,
    or one inside the caller's transaction, go through `atomic` (a savepoint in the latter, so a
    concurrent idempotency key's IntegrityError can be retried). Replays alone write nothing."""
    now = timezone.now()
    new = [
        _new_message(organization, integrations[row["provider"]], row, now)
        for row in cleaned
        if row["idempotency_key"] not in existing
    ]
    connection = connections[router.db_for_write(Message)]
    if len(new) == 1 and not connection.in_atomic_block:
        new[0].save(force_insert=True)
        _publish_created(new)
    elif new:  # (replays alone write and publish nothing)
        with transaction.atomic():
            _publish_created(copy_insert(Message, new))
    created_iter = iter(new)
    return [
        (existing[row["idempotency_key"]], False)
        if row["idempotency_key"] in existing
        else (next(created_iter), True)
        for row in cleaned
    ]


def _publish_created(created: list[Message]) -> None:
    """Publish the new rows once the surrounding transaction commits (at once in autocommit)."""
    now_ids = [m.pk for m in created if m.status == MessageStatus.QUEUED]
    publish_on_commit(DELIVER_MESSAGES, now_ids, on_failure=message_unpublish)
    later = {
        m.pk: m.next_attempt_at
        for m in created
        if m.status == MessageStatus.SCHEDULED and m.enqueued_at is not None
    }
    publish_later_on_commit(DELIVER_MESSAGES, later, on_failure=message_unpublish)


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


CANCELLABLE = (MessageStatus.SCHEDULED, MessageStatus.QUEUED)


def message_cancel(*, organization: Organization, message_id: int) -> Message:
    """Cancel a message whose send has not started (`scheduled` or `queued`): it becomes
    `cancelled`, final, and is never sent.

    One conditional UPDATE decides, so of a cancel and a worker's claim (queued → sending, also
    conditional) exactly one wins. Raises NotFound (not this organization's) or
    MessageNotCancellable (a send has started or the message is already final).
    """
    now = timezone.now()
    with transaction.atomic():
        message = _message_for_update(organization, message_id)
        old_status = message.status
        cancelled = Message.objects.filter(pk=message.pk, status__in=CANCELLABLE).update(
            status=MessageStatus.CANCELLED,
            enqueued_at=None,
            lease_expires_at=None,
            rate_slot_at=None,
            updated_at=now,
        )
        if not cancelled:
            raise MessageNotCancellable(
                f"Only scheduled or queued messages can be cancelled; this one is {old_status}."
            )
        message.refresh_from_db()
        messages_changed([message], old_status)
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
    transactional: bool = False,
    ignore_suppression: bool = False,
    send_at: datetime | str | None = None,
    template: Mapping[str, Any] | None = None,
    media_urls: Sequence[str] | None = None,
    attachments: Sequence[Mapping[str, Any]] | None = None,
    parse_mode: str | None = None,
    tag: str | None = None,
) -> Message:
    """Product-code entry point: exactly what POST /api/messages/ does; returns the message row.

    `send_at` (an aware datetime or an ISO 8601 string with an offset) schedules it.
    `template`, `media_urls`, `attachments` (dicts of filename, content as base64, type, …),
    `parse_mode` and `tag` are the API fields of the same names (docs/messages.md)."""
    organization = org if isinstance(org, Organization) else Organization.objects.get(pk=org)
    data: dict[str, Any] = {
        "provider": provider,
        "to": to,
        "body": body,
        "subject": subject,
        "html": html,
    }
    data |= {"transactional": transactional, "ignore_suppression": ignore_suppression}
    data |= {"template": template, "parse_mode": parse_mode, "tag": tag}
    data |= {"media_urls": list(media_urls or []), "attachments": list(attachments or [])}
    if isinstance(send_at, datetime):
        send_at = send_at.isoformat()
    message, _ = message_create(
        organization=organization,
        data={**data, "idempotency_key": idempotency_key, "send_at": send_at},
    )
    return message
