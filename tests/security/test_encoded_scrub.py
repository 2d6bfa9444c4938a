"""A provider error echoing the token percent- or base64-encoded leaves it in no field or line."""

from __future__ import annotations

import io
import logging

import pytest

from bench.security import count_encoded_leaks, count_leaks
from corbi.audit import AuditFormatter
from corbi.logging import RedactingFilter, install_record_factory
from shared.delivery.batch import message_deliver
from shared.models import AuditEvent, Message, MessageStatus
from shared.providers.base import REDACTED, ProviderError
from shared.providers.telegram import TelegramBot
from shared.services.integrations import integration_connect
from tests.factories import CANARY, VALID_EXTRA, make_member

pytestmark = pytest.mark.django_db

# '+', '/', '=' and '~' make the percent-encoded and URL-safe base64 forms differ from the token.
TOKEN = "cnry+Wa/Qx=7Zp9Kd3Lm5~Vb2Hj8Ws4Ny6Rf1"
SID = VALID_EXTRA["whatsapp"]["account_sid"]
SENDER = VALID_EXTRA["whatsapp"]["from_whatsapp"]
ECHO = (
    "Invalid 'To'. Request had auth header {authorization|urlencode}; credentials "
    "{credential|base64} ({credential|urlencode}) and token-bytes {credential}"
)


@pytest.fixture
def org(sandbox, sandbox_client, settings):
    settings.TWILIO_API_BASE = sandbox.url
    sandbox_client.add_account(
        "whatsapp", account_sid=SID, auth_token=TOKEN, senders=["whatsapp:" + SENDER]
    )
    member = make_member("acme", "alice", "admin")
    integration_connect(
        organization=member.org, provider="whatsapp", token=TOKEN, extra=VALID_EXTRA["whatsapp"]
    )
    return member


@pytest.fixture
def audit_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AuditFormatter())
    handler.addFilter(RedactingFilter())
    logging.getLogger("corbi.audit").addHandler(handler)
    yield stream
    logging.getLogger("corbi.audit").removeHandler(handler)


def leaks(text: str) -> int:
    tokens = {"whatsapp": TOKEN}
    return count_leaks(text, tokens) + count_encoded_leaks(text, tokens)


def test_a_provider_error_echoing_the_token_encoded_leaves_nothing_in_last_error_api_or_logs(
    org, tools, sandbox_client, client_for, caplog, audit_lines
):
    install_record_factory()
    sandbox_client.fault(
        "whatsapp",
        status=400,
        count=1,
        body={"code": 21211, "message": ECHO, "more_info": "https://x.test/21211", "status": 400},
    )
    message = Message.objects.create(
        organization=org.org,
        integration=org.org.integrations.get(provider="whatsapp"),
        provider="whatsapp",
        to="+14155550100",
        body="hello",
    )

    with caplog.at_level(logging.DEBUG):
        message_deliver(message_id=message.pk, limiter=tools[0], metrics=tools[1])
        logging.getLogger("shared.delivery.recording").warning(
            "send failed: %s", Message.objects.get(pk=message.pk).last_error
        )
    message.refresh_from_db()
    response = client_for(org).get(f"/api/messages/{message.pk}/")

    assert message.status == MessageStatus.FAILED
    assert "Invalid 'To'" in message.last_error and REDACTED in message.last_error
    assert "Request had auth header" in response.content.decode()
    texts = {
        "last_error": message.last_error,
        "API response": response.content.decode(),
        "audit rows": " ".join(str(e.data) for e in AuditEvent.objects.all()),
        "audit lines": audit_lines.getvalue(),
        "logs": caplog.text,
    }
    assert {place: leaks(text) for place, text in texts.items()} == dict.fromkeys(texts, 0)


def test_a_telegram_error_echoing_the_request_path_in_base64_names_no_token(
    sandbox, sandbox_client
):
    sandbox_client.add_account("telegram", token=CANARY["telegram"])
    description = "Bad Request: path {path|base64} / {path|urlencode}"
    sandbox_client.fault(
        "telegram",
        status=400,
        count=1,
        body={"ok": False, "error_code": 400, "description": description},
    )
    bot = TelegramBot(token=CANARY["telegram"], extra={}, base_url=sandbox.url)

    with pytest.raises(ProviderError) as raised:
        bot.check()

    text = str(raised.value)
    assert text.startswith("Telegram: path ") and REDACTED in text
    assert count_leaks(text, CANARY) + count_encoded_leaks(text, CANARY) == 0, text
