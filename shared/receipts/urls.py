"""Where each provider sends an integration's receipts (all under PUBLIC_BASE_URL)."""

from __future__ import annotations

from django.conf import settings

from shared.models import Integration, Provider


def status_callback_url(integration: Integration, message_id: int) -> str:
    """The Twilio StatusCallback of one WhatsApp send, or "" when PUBLIC_BASE_URL is not set.

    The integration's opaque webhook key names the integration (and so the auth token that
    verifies the signature); our message id lets a callback that beats the worker's record of
    the send still find its message.
    """
    base = settings.PUBLIC_BASE_URL
    if not base:
        return ""
    return f"{base}/webhooks/twilio/{integration.webhook_key}/status/?m={message_id}"


def receipts_url(integration: Integration) -> str | None:
    """The URL to give the provider for this integration's receipts; None when there is none
    (Telegram and Google Calendar send none) or PUBLIC_BASE_URL is not set.

    WhatsApp: set on every send automatically. SendGrid: paste it as the Event Webhook URL.
    Instagram: the deployment's one Meta webhook (callback URL of the Meta app).
    """
    base = settings.PUBLIC_BASE_URL
    key = integration.webhook_key
    urls = {
        Provider.WHATSAPP: f"{base}/webhooks/twilio/{key}/status/",
        Provider.SENDGRID: f"{base}/webhooks/sendgrid/{key}/events/",
        Provider.INSTAGRAM: f"{base}/webhooks/instagram/",
    }
    return urls.get(integration.provider) if base else None
