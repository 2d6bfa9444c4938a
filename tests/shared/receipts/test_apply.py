"""shared.receipts.apply: receipts are stored once and move a message's status forward only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from shared.models import Message, MessageEvent, MessageStatus, UnmatchedReceipt
from shared.receipts.apply import receipt_sweep, record_receipts
from shared.receipts.types import MessageRef, Outcome, Receipt, moves_forward
from tests.factories import connect

pytestmark = pytest.mark.django_db

S = MessageStatus


@pytest.fixture
def whatsapp(cast):
    connect(cast["admin"], "whatsapp")
    return cast["admin"].org.integrations.get(provider="whatsapp")


def message(integration, status=S.SENT, provider_id="SM1", **fields) -> Message:
    fields.setdefault("to", "+14155550123")
    return Message.objects.create(
        organization=integration.organization,
        integration=integration,
        provider=integration.provider,
        body="hi",
        status=status,
        provider_message_id=provider_id,
        sent_at=timezone.now() if status != S.QUEUED else None,
        **fields,
    )


def receipt(status: str, ref: MessageRef, event_id: str | None = None, **fields) -> Receipt:
    return Receipt(
        provider="whatsapp",
        ref=ref,
        provider_event_id=event_id or f"ev:{status}",
        provider_status=status,
        status=status,
        **fields,
    )


@pytest.mark.parametrize(
    ("current", "new", "moves"),
    [
        (S.SENT, S.DELIVERED, True),
        (S.SENT, S.READ, True),
        (S.DELIVERED, S.READ, True),
        (S.READ, S.DELIVERED, False),  # a late `delivered` never overwrites `read`
        (S.DELIVERED, S.DELIVERED, False),
        (S.SENT, S.UNDELIVERED, True),
        (S.DELIVERED, S.BOUNCED, True),  # an asynchronous bounce after delivery
        (S.UNDELIVERED, S.DELIVERED, False),
        (S.READ, S.UNDELIVERED, False),
        (S.FAILED, S.DELIVERED, False),  # refused by the provider: receipts cannot revive it
        (S.QUEUED, S.DELIVERED, False),
    ],
)
def test_statuses_only_move_forward(current, new, moves):
    assert moves_forward(current, new) is moves


def test_a_receipt_moves_the_message_and_is_stored_with_its_fields(whatsapp):
    m = message(whatsapp)
    r = receipt(S.DELIVERED, MessageRef(provider_message_id="SM1"), raw={"MessageSid": "SM1"})

    assert record_receipts([whatsapp], [r]) == {Outcome.APPLIED: 1}

    m.refresh_from_db()
    event = m.events.get()
    assert m.status == S.DELIVERED
    assert (event.provider_status, event.applied, event.raw) == (
        S.DELIVERED,
        True,
        {"MessageSid": "SM1"},
    )
    assert event.organization_id == m.organization_id


def test_a_duplicate_changes_nothing(whatsapp):
    m = message(whatsapp)
    r = receipt(S.DELIVERED, MessageRef(provider_message_id="SM1"))
    record_receipts([whatsapp], [r])

    assert record_receipts([whatsapp], [r]) == {Outcome.DUPLICATE: 1}
    assert m.events.count() == 1


def test_out_of_order_receipts_end_at_the_furthest_status(whatsapp):
    m = message(whatsapp)
    ref = MessageRef(provider_message_id="SM1")

    outcomes = record_receipts(
        [whatsapp], [receipt(S.READ, ref), receipt(S.DELIVERED, ref), receipt(S.SENT, ref)]
    )

    m.refresh_from_db()
    assert m.status == S.READ
    assert outcomes == {Outcome.APPLIED: 1, Outcome.RECORDED: 2}
    assert m.events.count() == 3


def test_a_failure_after_acceptance_keeps_its_reason_and_code(whatsapp):
    m = message(whatsapp)
    r = receipt(
        S.UNDELIVERED, MessageRef(provider_message_id="SM1"), error_code="63016", reason="window"
    )

    record_receipts([whatsapp], [r])

    m.refresh_from_db()
    assert (m.status, m.error_code, m.error_kind, m.last_error) == (
        S.UNDELIVERED,
        "63016",
        "undelivered",
        "window",
    )


def test_a_receipt_for_an_unknown_or_foreign_message_is_dropped(whatsapp, cast):
    connect(cast["outsider"], "whatsapp")
    foreign = message(cast["outsider"].org.integrations.get(provider="whatsapp"), provider_id="SM9")

    outcomes = record_receipts(
        [whatsapp],
        [
            receipt(S.DELIVERED, MessageRef(provider_message_id="SM404")),
            receipt(S.DELIVERED, MessageRef(message_pk=foreign.pk, provider_message_id="SM9")),
        ],
    )

    assert outcomes == {Outcome.UNKNOWN_MESSAGE: 2}
    assert not MessageEvent.objects.exists()
    foreign.refresh_from_db()
    assert foreign.status == S.SENT


def test_our_id_and_the_provider_id_must_agree(whatsapp):
    m = message(whatsapp, provider_id="SM1")

    outcomes = record_receipts(
        [whatsapp], [receipt(S.DELIVERED, MessageRef(message_pk=m.pk, provider_message_id="SM2"))]
    )

    assert outcomes == {Outcome.UNKNOWN_MESSAGE: 1}


def test_a_receipt_before_the_send_is_recorded_is_applied_by_the_sweeper(whatsapp):
    m = message(whatsapp, status=S.SENDING, provider_id="")
    r = receipt(S.DELIVERED, MessageRef(message_pk=m.pk, provider_message_id="SM7"))

    assert record_receipts([whatsapp], [r]) == {Outcome.EARLY: 1}
    assert receipt_sweep() == 0  # the send is still not recorded: it keeps waiting

    Message.objects.filter(pk=m.pk).update(status=S.SENT, provider_message_id="SM7")
    assert receipt_sweep() == 1

    m.refresh_from_db()
    assert m.status == S.DELIVERED
    assert m.events.get().applied is True
    assert receipt_sweep() == 0


def test_an_early_receipt_for_a_send_that_then_failed_is_kept_but_not_applied(whatsapp):
    m = message(whatsapp, status=S.SENDING, provider_id="")
    record_receipts([whatsapp], [receipt(S.DELIVERED, MessageRef(message_pk=m.pk))])
    Message.objects.filter(pk=m.pk).update(status=S.FAILED)

    assert receipt_sweep() == 1

    m.refresh_from_db()
    assert (m.status, m.events.get().applied) == (S.FAILED, False)


def test_a_read_watermark_marks_every_earlier_message_to_that_person(whatsapp):
    message(whatsapp, provider_id="m1")
    message(whatsapp, provider_id="m2")
    watermark = timezone.now()
    message(whatsapp, provider_id="m3", to="+14155550999")
    later = message(whatsapp, provider_id="m4")
    Message.objects.filter(pk=later.pk).update(sent_at=watermark + timedelta(seconds=5))

    ref = MessageRef(recipient="+14155550123", until=watermark)
    record_receipts([whatsapp], [receipt(S.READ, ref, event_id="read:w")])

    statuses = dict(Message.objects.values_list("provider_message_id", "status"))
    assert statuses == {"m1": S.READ, "m2": S.READ, "m3": S.SENT, "m4": S.SENT}


def test_a_receipt_naming_an_unrecorded_provider_id_is_kept_and_matched_later(whatsapp):
    m = message(whatsapp, status=S.SENDING, provider_id="")
    r = receipt(S.READ, MessageRef(provider_message_id="mid-long-" + "x" * 200))

    assert record_receipts([whatsapp], [r]) == {Outcome.EARLY: 1}
    assert receipt_sweep() == 0  # still not recorded

    Message.objects.filter(pk=m.pk).update(
        status=S.SENT, provider_message_id="mid-long-" + "x" * 200
    )
    assert receipt_sweep() == 1

    m.refresh_from_db()
    assert m.status == S.READ
    assert not UnmatchedReceipt.objects.exists()


def test_a_kept_receipt_is_dropped_after_the_window(whatsapp, settings):
    message(whatsapp, status=S.SENDING, provider_id="")
    record_receipts([whatsapp], [receipt(S.READ, MessageRef(provider_message_id="never"))])
    settings.RECEIPT_MATCH_WINDOW_SECONDS = 0

    receipt_sweep()

    assert not UnmatchedReceipt.objects.exists()


def test_with_no_send_in_flight_an_unknown_provider_id_is_dropped_at_once(whatsapp):
    message(whatsapp)

    outcomes = record_receipts([whatsapp], [receipt(S.READ, MessageRef(provider_message_id="x"))])

    assert outcomes == {Outcome.UNKNOWN_MESSAGE: 1}
    assert not UnmatchedReceipt.objects.exists()


def test_an_early_receipt_of_an_earlier_attempt_is_not_applied_to_the_recorded_send(whatsapp):
    m = message(whatsapp, status=S.SENDING, provider_id="")
    # Send 1 was accepted but never recorded (a worker died); its receipt comes while send 2 runs.
    stale = receipt(S.READ, MessageRef(message_pk=m.pk, provider_message_id="SM-send-1"))
    assert record_receipts([whatsapp], [stale]) == {Outcome.EARLY: 1}

    Message.objects.filter(pk=m.pk).update(status=S.SENT, provider_message_id="SM-send-2")
    receipt_sweep()

    m.refresh_from_db()
    assert m.status == S.SENT
    assert m.events.get().applied is False
