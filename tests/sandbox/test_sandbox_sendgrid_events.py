"""SendGrid Event Webhook batches from the sandbox, checked with sendgrid's EventWebhook."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sendgrid.helpers.mail import Category, CustomArg, Mail

from sandbox.testing import SandboxError, SandboxProcess

KEY = "SG.events.sandboxsecret0123456789"
SENDER = "from@example.test"


@pytest.fixture
def sg(sandbox, sandbox_client, receiver) -> SendGridAPIClient:
    sandbox_client.add_account("sendgrid", api_key=KEY)
    sandbox_client.configure(callback_delay_ms=[5, 20])
    sandbox_client.sendgrid_event_webhook(KEY, receiver.url)
    return SendGridAPIClient(api_key=KEY, host=sandbox.url)


def send(sg: SendGridAPIClient, *to: str, categories: tuple[str, ...] = ()) -> str:
    mail = Mail(from_email=SENDER, to_emails=list(to), subject="hi", plain_text_content="body")
    mail.custom_arg = CustomArg("corbi_message_id", "msg-42")
    for category in categories:
        mail.add_category(Category(category))
    return sg.send(mail).headers["X-Message-Id"]


_COMMON = {"processed", "delivered"}


def events(calls) -> list[list[str]]:
    return [[e["event"] for e in json.loads(c.body)] for c in calls]


def test_delivered_mail_posts_processed_then_delivered_signed_batches(sg, receiver, sandbox_client):
    message_id = send(sg, "ann@example.test", categories=("receipts",))
    verifier = EventWebhook(sandbox_client.sendgrid_public_key())

    calls = receiver.take(2)
    assert events(calls) == [["processed"], ["delivered"]]
    for call in calls:
        signature = call.headers[EventWebhookHeader.SIGNATURE]
        timestamp = call.headers[EventWebhookHeader.TIMESTAMP]
        payload = call.body.decode()
        assert verifier.verify_signature(payload, signature, timestamp)
        assert not verifier.verify_signature(payload.replace("ann", "bob"), signature, timestamp)
        assert call.headers["User-Agent"] == "SendGrid Event API"
        assert call.headers["Content-Type"] == "application/json"
        assert payload.endswith("]\r\n")
    [processed], [delivered] = (json.loads(c.body) for c in calls)
    for event in (processed, delivered):
        assert event["email"] == "ann@example.test"
        assert event["sg_message_id"].startswith(message_id + ".")
        assert event["corbi_message_id"] == "msg-42"
        assert event["category"] == "receipts"
        assert event["smtp-id"].startswith(f"<{message_id}@")
        assert isinstance(event["timestamp"], int)
    assert processed["sg_event_id"] != delivered["sg_event_id"]
    assert processed["sg_message_id"] == delivered["sg_message_id"]
    assert delivered["response"] == "250 OK"


def test_signature_matches_a_hand_ecdsa_check_over_timestamp_and_raw_body(
    sg, receiver, sandbox_client
):
    send(sg, "ann@example.test")
    der = base64.b64decode(sandbox_client.sendgrid_public_key())
    key = serialization.load_der_public_key(der)
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"

    call = receiver.next()
    signed = call.headers[EventWebhookHeader.TIMESTAMP].encode() + call.body
    signature = base64.b64decode(call.headers[EventWebhookHeader.SIGNATURE])
    key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    reserialised = json.dumps(json.loads(call.body)).encode()
    with pytest.raises(InvalidSignature):
        key.verify(
            signature,
            call.headers[EventWebhookHeader.TIMESTAMP].encode() + reserialised,
            ec.ECDSA(hashes.SHA256()),
        )


def test_public_key_is_the_dashboard_form(sg, sandbox_client):
    public_key = sandbox_client.sendgrid_public_key()
    assert public_key.startswith("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
    settings = sandbox_client.sendgrid_event_webhook(KEY, None)
    assert (settings["enabled"], settings["public_key"]) == (False, public_key)


@pytest.mark.parametrize(
    ("to", "expected", "fields"),
    [
        ("bounce@sandbox.test", [["processed"], ["bounce"]], {"type": "bounce", "status": "5.1.1"}),
        ("blocked@sandbox.test", [["processed"], ["bounce"]], {"type": "blocked"}),
        ("dropped@sandbox.test", [["dropped"]], {"reason": "Bounced Address", "status": "5.0.0"}),
        (
            "deferred@sandbox.test",
            [["processed"], ["deferred"], ["deferred"], ["delivered"]],
            {"response": "451 4.7.1 Try again later", "attempt": "2"},
        ),
        (
            "engaged@sandbox.test",
            [["processed"], ["delivered"], ["open"], ["click"]],
            {"url": "https://example.test/landing"},
        ),
        ("spamreport@sandbox.test", [["processed"], ["delivered"], ["spamreport"]], {}),
        ("unsubscribe@sandbox.test", [["processed"], ["delivered"], ["unsubscribe"]], {}),
    ],
)
def test_magic_recipients_produce_their_events(sg, receiver, to, expected, fields):
    send(sg, to)

    calls = receiver.take(len(expected))
    assert events(calls) == expected
    special = [e for c in calls for e in json.loads(c.body) if e["event"] not in _COMMON]
    assert fields.items() <= special[-1].items()
    receiver.assert_quiet()


def test_recipients_of_one_mail_share_batches(sg, receiver):
    send(sg, "ann@example.test", "dropped@sandbox.test")

    first, second = receiver.take(2)
    assert sorted(events([first])[0]) == ["dropped", "processed"]
    assert events([second]) == [["delivered"]]


def test_reordered_recipient_posts_later_events_first(sg, receiver):
    send(sg, "reordered@sandbox.test")

    calls = receiver.take(3)
    assert events(calls) == [["open"], ["delivered"], ["processed"]]
    stamps = [json.loads(c.body)[0]["timestamp"] for c in calls]
    assert stamps == sorted(stamps, reverse=True)


def test_duplicate_recipient_posts_each_batch_twice_with_the_same_event_ids(sg, receiver):
    send(sg, "duplicate@sandbox.test")

    calls = receiver.take(4)
    assert events(calls) == [["processed"], ["processed"], ["delivered"], ["delivered"]]
    assert json.loads(calls[0].body) == json.loads(calls[1].body)


def test_non_2xx_answers_are_retried_and_re_signed(sg, receiver, sandbox_client, poll):
    sandbox_client.configure(callback_retry_delay_ms=10)
    receiver.answers = [500, 404]
    send(sg, "dropped@sandbox.test")

    calls = receiver.take(3)
    verifier = EventWebhook(sandbox_client.sendgrid_public_key())
    for call in calls:
        assert verifier.verify_signature(
            call.body.decode(),
            call.headers[EventWebhookHeader.SIGNATURE],
            call.headers[EventWebhookHeader.TIMESTAMP],
        )
    [entry] = poll(
        lambda: sandbox_client.callbacks("sendgrid"), lambda e: e and e[0]["outcome"] == "ok"
    )
    assert [a["status"] for a in entry["attempts"]] == [500, 404, 200]
    assert (entry["kind"], entry["events"], entry["url"]) == (
        "event_webhook",
        ["dropped"],
        receiver.url,
    )


def test_no_events_without_a_webhook_url_and_unknown_keys_are_refused(
    sandbox, sandbox_client, receiver
):
    sandbox_client.add_account("sendgrid", api_key=KEY)
    SendGridAPIClient(api_key=KEY, host=sandbox.url).send(
        Mail(from_email=SENDER, to_emails="a@example.test", subject="s", plain_text_content="b")
    )
    assert sandbox_client.callbacks("sendgrid") == []
    with pytest.raises(SandboxError, match="404"):
        sandbox_client.sendgrid_event_webhook("SG.unknown.key", receiver.url)
    with pytest.raises(SandboxError, match="400"):
        sandbox_client.sendgrid_event_webhook(KEY, "ftp://127.0.0.1/hook")


def test_webhook_url_can_come_with_the_account(sandbox, sandbox_client, receiver):
    sandbox_client.add_account("sendgrid", api_key=KEY, event_webhook_url=receiver.url)
    SendGridAPIClient(api_key=KEY, host=sandbox.url).send(
        Mail(from_email=SENDER, to_emails="a@example.test", subject="s", plain_text_content="b")
    )
    assert events(receiver.take(2)) == [["processed"], ["delivered"]]


def test_signing_key_can_be_pinned_from_a_pem_file(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "key.pem").write_bytes(pem)
    expected = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()

    args = ["--sendgrid-signing-key", str(tmp_path / "key.pem")]
    with SandboxProcess(extra_args=args) as sb:
        assert sb.client.sendgrid_public_key() == expected
        sb.client.reset()
        assert sb.client.sendgrid_public_key() == expected


def test_callback_settings_are_validated(sandbox_client):
    for bad in (
        {"callback_order": "sideways"},
        {"callback_duplicate_rate": 2},
        {"callback_retries": -1},
        {"callback_timeout_seconds": 0},
    ):
        with pytest.raises(SandboxError, match="400"):
            sandbox_client.configure(**bad)
    config = sandbox_client.configure(callback_order="shuffled", callback_duplicate_rate=0.5)
    assert (config["callback_order"], config["callback_retries"]) == ("shuffled", 3)


def test_non_loopback_webhook_urls_are_recorded_as_refused(sandbox, sandbox_client):
    sandbox_client.add_account("sendgrid", api_key=KEY, event_webhook_url="https://example.com/h")
    message_id = (
        SendGridAPIClient(api_key=KEY, host=sandbox.url)
        .send(
            Mail(from_email=SENDER, to_emails="a@example.test", subject="s", plain_text_content="b")
        )
        .headers["X-Message-Id"]
    )

    entries = sandbox_client.callbacks("sendgrid")
    assert [e["events"] for e in entries] == [["processed"], ["delivered"]]
    assert all(e["outcome"].startswith("refused") for e in entries)
    assert all(e["message_id"] == message_id and e["attempts"] == [] for e in entries)
