"""The suppression list: which receipts and send errors add a recipient to it (the one table of
rules), adding entries without ever failing the caller, and the per-batch check before sends.

A signal is what a provider said, as text: SendGrid's event name (`bounce` with its `type`,
`dropped` with its reason), Telegram's error code and description, Twilio's ErrorCode.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import DatabaseError, transaction

from shared.models import Message, Suppression, SuppressionReason
from shared.providers.base import ProviderError
from shared.providers.registry import SPECS
from shared.receipts.types import Receipt

logger = logging.getLogger(__name__)

# (provider, signal) → reason. SendGrid `bounce` with `type: blocked` is NOT here: a block is
# the receiving server refusing this sender (reputation, content, a blocklist), usually
# temporary and not about the address, so it stays a bounced message without suppressing.
RULES: dict[tuple[str, str], str] = {
    ("sendgrid", "bounce:bounce"): SuppressionReason.BOUNCE,
    ("sendgrid", "spamreport"): SuppressionReason.SPAMREPORT,
    ("sendgrid", "unsubscribe"): SuppressionReason.UNSUBSCRIBE,
    ("sendgrid", "dropped:Bounced Address"): SuppressionReason.BOUNCE,
    ("sendgrid", "dropped:Unsubscribed Address"): SuppressionReason.UNSUBSCRIBE,
    ("sendgrid", "dropped:Spam Reporting Address"): SuppressionReason.SPAMREPORT,
    # The Telegram adapter's ProviderError: code 403, message "Telegram: bot was blocked by
    # the user" (the Bot API's "Forbidden: bot was blocked by the user").
    ("telegram", "403:bot was blocked by the user"): SuppressionReason.BLOCKED,
    # Twilio 63014: the user blocked the business on WhatsApp (callback ErrorCode or API code).
    ("whatsapp", "63014"): SuppressionReason.OPT_OUT,
}
SUPPRESSED = "suppressed"  # a message's error_code when the batch check failed it
SUPPRESSED_TEXT = (
    "The recipient is on this organization's suppression list for this provider; not sent."
)


def receipt_signal(receipt: Receipt) -> str:
    """The signal a receipt carries (see RULES)."""
    if receipt.provider == "sendgrid":
        name = receipt.provider_status
        if name == "bounce":
            return f"bounce:{receipt.raw.get('type', '')}"
        if name == "dropped":
            return f"dropped:{receipt.reason}"
        return name
    if receipt.provider == "whatsapp":
        return receipt.error_code
    return ""


def error_signal(provider: str, error: ProviderError) -> str:
    """The signal a failed send carries (see RULES)."""
    if provider == "telegram":
        return f"{error.code}:{error.message.removeprefix('Telegram: ').strip().lower()}"
    if provider == "whatsapp":
        return str(error.code or "")
    return ""


def from_receipt(message: Message, receipt: Receipt) -> Suppression | None:
    """Suppress the message's recipient when its receipt says so; never raises."""
    reason = RULES.get((receipt.provider, receipt_signal(receipt)))
    if reason is None:
        return None
    source = f"{receipt.provider} receipt {receipt.provider_status} on message {message.pk}"
    return add(message.organization_id, message.provider, message.to, reason, source)


def from_failure(message: Message, error: ProviderError) -> Suppression | None:
    """Suppress the message's recipient when its permanent send error says so; never raises."""
    reason = RULES.get((message.provider, error_signal(message.provider, error)))
    if reason is None:
        return None
    source = f"{message.provider} error {error.code} on message {message.pk}"
    return add(message.organization_id, message.provider, message.to, reason, source)


def normalized(provider: str, recipient: str) -> str:
    """`recipient` as a message's `to` is stored; raises ValueError when it is not valid."""
    rules = SPECS[provider].messages if provider in SPECS else None
    if rules is None:
        raise ValueError(f"{provider} does not send messages.")
    return rules.destination(recipient)


def add(
    organization_id: int, provider: str, recipient: str, reason: str, source: str
) -> Suppression | None:
    """Add an entry unless one exists (idempotent, race-safe); logs and returns None on any
    database error, in a savepoint so the caller's transaction goes on."""
    try:
        recipient = normalized(provider, recipient)
    except ValueError:
        return None
    try:
        with transaction.atomic():
            entry, created = Suppression.objects.get_or_create(
                organization_id=organization_id,
                provider=provider,
                recipient=recipient,
                defaults={"reason": reason, "source": source[:500]},
            )
    except DatabaseError:
        logger.exception("Could not add a %s suppression (%s).", provider, reason)
        return None
    if created:
        logger.info(
            "Suppressed a %s recipient of organization %s (%s).", provider, organization_id, reason
        )
    return entry


def suppressed(messages: Sequence[Message]) -> set[int]:
    """The ids of `messages` whose recipient is suppressed, in one query (none when no message
    is subject to the list). `ignore_suppression` exempts a message."""
    subject = [m for m in messages if not m.ignore_suppression]
    if not subject:
        return set()
    keys = {(m.organization_id, m.provider, m.to) for m in subject}
    # Three IN lists, not one OR of a (org, provider, recipient) triple per message: the ORM
    # builds a lookup per term, which cost more CPU than the rest of the batch's queries. The
    # lists may match more triples than asked (another org's recipient); the exact triples are
    # picked here, so the answer is the same.
    organizations = {org for org, _, _ in keys}
    providers = {provider for _, provider, _ in keys}
    recipients = {to for _, _, to in keys}
    found = set(
        Suppression.objects.filter(
            organization_id__in=organizations, provider__in=providers, recipient__in=recipients
        ).values_list("organization_id", "provider", "recipient")
    )
    return {m.pk for m in subject if (m.organization_id, m.provider, m.to) in found}
