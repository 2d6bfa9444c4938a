"""The suppression list: each automatic source adds an entry; a batch never calls the provider
for a suppressed recipient (one query per batch); a transactional message may ignore it."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from shared.delivery.recording import record_error
from shared.events.signals import message_status_changed
from shared.models import Integration, Message, MessageStatus, Suppression
from shared.providers.base import ProviderError
from shared.receipts import sendgrid, twilio
from shared.receipts.apply import record_receipts
from shared.services.integrations import integration_connect
from shared.suppressions import add, suppressed
from tests.factories import CANARY, VALID_EXTRA, make_member
from tests.shared.delivery.helpers import BOT, deliver_batch, queued, sends

pytestmark = pytest.mark.django_db


def _sent(org, provider, to, **fields):
    integration = org.integrations.get(provider=provider)
    return Message.objects.create(
        organization=org,
        integration=integration,
        provider=provider,
        to=to,
        subject="Hi" if provider == "sendgrid" else "",
        body="hi",
        status=MessageStatus.SENT,
        provider_message_id=f"pm{Message.objects.count()}",
        sent_at=timezone.now(),
        **fields,
    )


def _sendgrid_event(message, event, **fields):
    body = [
        {
            "event": event,
            "corbi_reference": f"msg-{message.pk}",
            "sg_event_id": f"ev-{event}-{message.pk}",
            "email": message.to,
            **fields,
        }
    ]
    return sendgrid.parse(json.dumps(body).encode())


@pytest.fixture
def sendgrid_org(org):
    for provider in ("sendgrid", "whatsapp"):
        integration_connect(
            organization=org, provider=provider, token=CANARY[provider], extra=VALID_EXTRA[provider]
        )
    return org


@pytest.mark.parametrize(
    ("event", "fields", "reason"),
    [
        ("bounce", {"type": "bounce", "status": "5.1.1", "reason": "no such user"}, "bounce"),
        ("spamreport", {}, "spamreport"),
        ("unsubscribe", {}, "unsubscribe"),
        ("dropped", {"reason": "Bounced Address"}, "bounce"),
        ("dropped", {"reason": "Unsubscribed Address"}, "unsubscribe"),
        ("dropped", {"reason": "Spam Reporting Address"}, "spamreport"),
    ],
)
def test_sendgrid_receipts_suppress_the_recipient(sendgrid_org, event, fields, reason):
    message = _sent(sendgrid_org, "sendgrid", "Bob@Example.TEST")
    integration = message.integration

    record_receipts([integration], _sendgrid_event(message, event, **fields))
    record_receipts([integration], _sendgrid_event(message, event, **fields))  # idempotent

    entry = Suppression.objects.get(organization=sendgrid_org, provider="sendgrid")
    assert (entry.recipient, entry.reason) == ("Bob@example.test", reason)
    assert str(message.pk) in entry.source


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ("bounce", {"type": "blocked", "reason": "IP on a blocklist"}),  # not a hard bounce
        ("dropped", {"reason": "Invalid SMTPAPI header"}),
        ("delivered", {}),
    ],
)
def test_other_sendgrid_receipts_suppress_nothing(sendgrid_org, event, fields):
    message = _sent(sendgrid_org, "sendgrid", "bob@example.test")
    record_receipts([message.integration], _sendgrid_event(message, event, **fields))
    assert not Suppression.objects.exists()


def test_a_twilio_callback_with_63014_opts_the_number_out(sendgrid_org):
    message = _sent(sendgrid_org, "whatsapp", "+14155550123")
    params = {"MessageSid": message.provider_message_id, "MessageStatus": "failed"}

    record_receipts([message.integration], twilio.parse({**params, "ErrorCode": "63014"}, None))

    entry = Suppression.objects.get(provider="whatsapp")
    assert (entry.recipient, entry.reason) == ("+14155550123", "opt_out")
    message.refresh_from_db()
    assert message.status == MessageStatus.UNDELIVERED  # the receipt itself still applied


def test_a_twilio_callback_with_another_error_suppresses_nothing(sendgrid_org):
    message = _sent(sendgrid_org, "whatsapp", "+14155550123")
    params = {"MessageSid": message.provider_message_id, "MessageStatus": "failed"}
    record_receipts([message.integration], twilio.parse({**params, "ErrorCode": "63016"}, None))
    assert not Suppression.objects.exists()


def test_a_synchronous_63014_from_twilio_opts_the_number_out(sendgrid_org, tools):
    message = _sent(sendgrid_org, "whatsapp", "+14155550123")
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENDING)
    error = ProviderError(
        "Twilio: blocked (63014)", kind="permanent", provider="whatsapp", code=63014
    )

    outcome = record_error(message, 1, timezone.now(), 0.1, error, tools[1])

    assert outcome.status == "failed"
    assert Suppression.objects.get(provider="whatsapp").reason == "opt_out"


def _unlimited(org):
    Integration.objects.filter(organization=org, provider="telegram").update(
        extra={"rate_limit_per_second": 1_000_000}
    )


def test_a_bot_blocked_by_the_user_suppresses_the_chat(org, tools, sandbox_client):
    _unlimited(org)
    blocked = queued(org, to="403")
    other = queued(org, to="40301")  # user deactivated: a 403 that is not "blocked"

    outcomes = deliver_batch([blocked.pk, other.pk], tools)

    assert outcomes[blocked.pk].status == outcomes[other.pk].status == "failed"
    entry = Suppression.objects.get(organization=org)
    assert (entry.provider, entry.recipient, entry.reason) == ("telegram", "403", "blocked")
    assert str(blocked.pk) in entry.source


def test_a_suppressed_recipient_fails_without_a_provider_call(org, tools, sandbox_client):
    add(org.pk, "telegram", "4242", "manual", "test")
    changes = []

    def seen(sender, message, old_status, new_status, **kwargs):
        changes.append((message.pk, old_status, new_status))

    message_status_changed.connect(seen)
    try:
        message = queued(org, to="4242")
        outcomes = deliver_batch([message.pk], tools)
    finally:
        message_status_changed.disconnect(seen)

    message.refresh_from_db()
    assert outcomes[message.pk].status == "failed"
    assert (message.status, message.error_code, message.attempts) == ("failed", "suppressed", 0)
    assert changes == [(message.pk, "queued", "failed")]  # message.failed announced
    assert sends(sandbox_client) == []
    assert sandbox_client.requests("telegram") == []


def test_a_transactional_message_that_ignores_suppression_is_sent(org, tools, sandbox_client):
    add(org.pk, "telegram", "4242", "manual", "test")
    message = queued(org, to="4242", transactional=True, ignore_suppression=True)

    outcomes = deliver_batch([message.pk], tools)

    assert outcomes[message.pk].status == "sent"
    assert len(sends(sandbox_client)) == 1


@pytest.mark.parametrize("count", [2, 20])
def test_the_batch_checks_suppression_in_one_query(org, tools, sandbox_client, count):
    _unlimited(org)
    for n in range(count // 2):
        add(org.pk, "telegram", str(7000 + n), "manual", "test")
    messages = [queued(org, to=str(7000 + n)) for n in range(count)]

    with CaptureQueriesContext(connection) as queries:
        outcomes = deliver_batch([m.pk for m in messages], tools)

    checks = [q["sql"] for q in queries.captured_queries if '"shared_suppression"' in q["sql"]]
    assert len(checks) == 1, checks
    failed = sorted(pk for pk, o in outcomes.items() if o.status == "failed")
    assert failed == sorted(m.pk for m in messages[: count // 2])
    assert len(sends(sandbox_client)) == count - count // 2


def test_suppressed_is_scoped_to_the_recipient_in_one_query(org):
    add(org.pk, "telegram", "4242", "manual", "test")
    mine = queued(org, to="4242")
    other_chat = queued(org, to="4243")
    with CaptureQueriesContext(connection) as queries:
        found = suppressed([mine, other_chat])
    assert found == {mine.pk}
    assert len(queries.captured_queries) == 1


def test_suppressed_matches_whole_triples_not_each_column(org):
    """The query asks by three IN lists; an entry that matches each list in some column but no
    message's (org, provider, recipient) as a whole suppresses nothing."""
    other = make_member("globex", "bob", "admin").org
    integration_connect(organization=other, provider="telegram", token=BOT, extra={})
    add(org.pk, "telegram", "4242", "manual", "test")
    add(other.pk, "telegram", "5151", "manual", "test")
    add(org.pk, "whatsapp", "+14155550100", "manual", "test")
    hit = queued(org, to="4242")
    not_mine = queued(org, to="5151")  # suppressed in the other org only
    not_theirs = queued(other, to="4242")  # suppressed in org only
    wrong_provider = queued(org, to="+14155550100")  # suppressed for WhatsApp only
    exempt = queued(org, to="4242", ignore_suppression=True)
    with CaptureQueriesContext(connection) as queries:
        found = suppressed([hit, not_mine, not_theirs, wrong_provider, exempt])
    assert Suppression.objects.count() == 3
    assert found == {hit.pk}
    assert len(queries.captured_queries) == 1


def test_adding_an_entry_never_fails_the_caller(org):
    assert add(org.pk, "telegram", "not a chat", "manual", "test") is None
    first = add(org.pk, "telegram", "4242", "blocked", "first")
    again = add(org.pk, "telegram", "4242", "manual", "second")
    assert first.pk == again.pk and again.reason == "blocked"
