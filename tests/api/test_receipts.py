"""The receipt receivers: signed with each provider's own scheme, or 403 and nothing changes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client
from django.utils import timezone
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from api.metrics import store
from shared.models import Message, MessageEvent, MessageStatus
from shared.receipts.urls import receipts_url, status_callback_url
from shared.services.integrations import integration_connect
from tests.factories import CANARY, VALID_EXTRA, assert_no_canary, connect

pytestmark = pytest.mark.django_db

BASE = "https://corbi.example.test"
APP_SECRET = "meta-app-secret-for-tests-5a1b2c3d4e"
IG_ID = VALID_EXTRA["instagram"]["instagram_scoped_id"]


@pytest.fixture(autouse=True)
def public_base(settings):
    settings.PUBLIC_BASE_URL = BASE
    settings.META_APP_SECRET = APP_SECRET
    settings.META_WEBHOOK_VERIFY_TOKEN = "verify-me-7"


@pytest.fixture
def sent(cast):
    """One sent message per receipt provider, for acme."""
    admin = cast["admin"]
    connect(admin, "whatsapp", "instagram")
    rows = {}
    for provider, to, pid in (
        ("whatsapp", "+14155550123", "SM" + "a" * 32),
        ("instagram", "5601", "aWdfmid1"),
    ):
        integration = admin.org.integrations.get(provider=provider)
        rows[provider] = Message.objects.create(
            organization=admin.org,
            integration=integration,
            provider=provider,
            to=to,
            body="hi",
            status=MessageStatus.SENT,
            provider_message_id=pid,
            sent_at=timezone.now(),
        )
    return rows


# -- Twilio -------------------------------------------------------------------------------


def twilio_post(message, params, *, token=CANARY["whatsapp"], url=None, signature=None):
    url = url or status_callback_url(message.integration, message.pk)
    signature = signature or RequestValidator(token).compute_signature(url, params)
    path = url.removeprefix(BASE)
    return Client().post(
        path,
        urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )


def twilio_params(message, status, **extra):
    return {
        "MessageSid": message.provider_message_id,
        "MessageStatus": status,
        "AccountSid": VALID_EXTRA["whatsapp"]["account_sid"],
        "To": "whatsapp:" + message.to,
        "ChannelPrefix": "whatsapp",
        **extra,
    }


def test_a_signed_twilio_callback_moves_the_message(sent):
    m = sent["whatsapp"]

    response = twilio_post(m, twilio_params(m, "delivered"))

    assert response.status_code == 200, response.content
    m.refresh_from_db()
    assert m.status == MessageStatus.DELIVERED
    assert m.events.get().raw["MessageStatus"] == "delivered"


def test_a_hand_computed_twilio_signature_verifies_too(sent):
    m = sent["whatsapp"]
    params = twilio_params(m, "read")
    url = status_callback_url(m.integration, m.pk)
    signed = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(CANARY["whatsapp"].encode(), signed.encode(), hashlib.sha1).digest()

    response = twilio_post(m, params, signature=base64.b64encode(digest).decode())

    assert response.status_code == 200
    m.refresh_from_db()
    assert m.status == MessageStatus.READ


@pytest.mark.parametrize(
    "forgery",
    ["wrong_token", "tampered", "other_url", "missing", "unknown_key"],
)
def test_a_forged_twilio_callback_is_403_and_changes_nothing(sent, forgery):
    m = sent["whatsapp"]
    params = twilio_params(m, "delivered")
    url = status_callback_url(m.integration, m.pk)
    kwargs = {}
    if forgery == "wrong_token":
        kwargs["token"] = "x" * 32
    elif forgery == "tampered":
        kwargs["signature"] = RequestValidator(CANARY["whatsapp"]).compute_signature(
            url, {**params, "MessageStatus": "sent"}
        )
    elif forgery == "other_url":
        kwargs["signature"] = RequestValidator(CANARY["whatsapp"]).compute_signature(
            "http://127.0.0.1:8000" + url.removeprefix(BASE), params
        )
    elif forgery == "missing":
        kwargs["signature"] = " "
    else:
        kwargs["url"] = url.replace(m.integration.webhook_key, "k" * 43)

    response = twilio_post(m, params, **kwargs)

    assert response.status_code == 403
    assert response.json()["code"] == "webhook_signature_invalid"
    assert_no_canary(response.content.decode())
    m.refresh_from_db()
    assert m.status == MessageStatus.SENT and not MessageEvent.objects.exists()


def test_twilio_failed_after_acceptance_is_undelivered_with_its_code(sent):
    m = sent["whatsapp"]

    twilio_post(m, twilio_params(m, "failed", ErrorCode="63016"))

    m.refresh_from_db()
    assert (m.status, m.error_code) == (MessageStatus.UNDELIVERED, "63016")


def test_duplicate_and_out_of_order_twilio_callbacks(sent):
    m = sent["whatsapp"]
    for status in ("read", "delivered", "read", "sent"):
        assert twilio_post(m, twilio_params(m, status)).status_code == 200

    m.refresh_from_db()
    assert m.status == MessageStatus.READ
    assert sorted(m.events.values_list("provider_status", flat=True)) == [
        "delivered",
        "read",
        "sent",
    ]


def test_a_signed_callback_for_an_unknown_message_is_200_and_counted(sent):
    m = sent["whatsapp"]
    before = store().snapshot()["receipts_total"].get("whatsapp|unknown_message", "0")
    url = status_callback_url(m.integration, m.pk + 1000)

    response = twilio_post(m, twilio_params(m, "delivered"), url=url)

    assert response.status_code == 200
    assert response.json()["outcomes"] == {"unknown_message": 1}
    after = store().snapshot()["receipts_total"].get("whatsapp|unknown_message", "0")
    assert int(after) == int(before) + 1


def test_a_signed_but_unreadable_callback_is_400(sent):
    m = sent["whatsapp"]

    response = twilio_post(m, {"AccountSid": "AC1"})

    assert response.status_code == 400
    assert response.json()["code"] == "webhook_malformed"


# -- SendGrid -----------------------------------------------------------------------------


@pytest.fixture
def sendgrid(cast):
    """SendGrid connected with the verification key of a key pair the test holds."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    integration = integration_connect(
        organization=cast["admin"].org,
        provider="sendgrid",
        token=CANARY["sendgrid"],
        extra={
            **VALID_EXTRA["sendgrid"],
            "event_webhook_public_key": base64.b64encode(public).decode(),
        },
    )
    message = Message.objects.create(
        organization=integration.organization,
        integration=integration,
        provider="sendgrid",
        to="ana@example.test",
        subject="s",
        body="hi",
        status=MessageStatus.SENT,
        provider_message_id="Xet6bZ7WRTG2fYDa-p7arw",
        sent_at=timezone.now(),
    )
    return integration, key, message


def sendgrid_post(integration, key, events, *, timestamp=None, body=None):
    raw = body if body is not None else ("\r\n".join(json.dumps(e) for e in [events]) + "\r\n")
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = key.sign((stamp + raw).encode(), ec.ECDSA(hashes.SHA256()))
    return Client().post(
        receipts_url(integration).removeprefix(BASE),
        raw,
        content_type="application/json",
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=base64.b64encode(signature).decode(),
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=stamp,
    )


def event(message, name, n=1, **extra):
    return {
        "email": message.to,
        "timestamp": int(time.time()),
        "event": name,
        "sg_event_id": f"evt-{name}-{n}",
        "sg_message_id": message.provider_message_id + ".recvd-1",
        "corbi_reference": f"msg-{message.pk}",
        **extra,
    }


def test_a_signed_sendgrid_batch_is_applied_and_verifies_with_the_sdk(sendgrid):
    integration, key, m = sendgrid
    events = [event(m, "processed"), event(m, "delivered"), event(m, "open")]

    response = sendgrid_post(integration, key, events)

    assert response.status_code == 200, response.content
    m.refresh_from_db()
    assert m.status == MessageStatus.READ
    assert set(m.events.values_list("provider_status", flat=True)) == {
        "processed",
        "delivered",
        "open",
    }


def test_the_sdk_accepts_what_the_test_signs():
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stamp, payload = "1700000000", '[{"event":"delivered"}]\r\n'
    signature = base64.b64encode(key.sign((stamp + payload).encode(), ec.ECDSA(hashes.SHA256())))

    webhook = EventWebhook(base64.b64encode(public).decode())
    assert webhook.verify_signature(payload, signature.decode(), stamp)


def test_a_bounce_is_bounced_with_its_reason(sendgrid):
    integration, key, m = sendgrid

    sendgrid_post(integration, key, [event(m, "bounce", reason="550 no such user", status="5.1.1")])

    m.refresh_from_db()
    assert (m.status, m.error_code, m.last_error) == (
        MessageStatus.BOUNCED,
        "5.1.1",
        "550 no such user",
    )


@pytest.mark.parametrize("forgery", ["stale", "future", "tampered", "other_key"])
def test_a_forged_or_replayed_sendgrid_batch_is_403(sendgrid, forgery):
    integration, key, m = sendgrid
    events = [event(m, "delivered")]
    if forgery == "stale":
        response = sendgrid_post(integration, key, events, timestamp=int(time.time()) - 3600)
    elif forgery == "future":
        response = sendgrid_post(integration, key, events, timestamp=int(time.time()) + 3600)
    elif forgery == "other_key":
        response = sendgrid_post(integration, ec.generate_private_key(ec.SECP256R1()), events)
    else:
        raw = json.dumps(events)
        stamp = str(int(time.time()))
        signature = key.sign((stamp + raw).encode(), ec.ECDSA(hashes.SHA256()))
        response = Client().post(
            receipts_url(integration).removeprefix(BASE),
            raw.replace("delivered", "open"),
            content_type="application/json",
            HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=base64.b64encode(signature).decode(),
            HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=stamp,
        )

    assert response.status_code == 403
    m.refresh_from_db()
    assert m.status == MessageStatus.SENT and not m.events.exists()


def test_sendgrid_without_a_verification_key_refuses_everything(cast, sendgrid):
    integration, key, m = sendgrid
    integration.extra.pop("event_webhook_public_key")
    integration.save()

    assert sendgrid_post(integration, key, [event(m, "delivered")]).status_code == 403


def test_a_signed_sendgrid_body_that_is_not_an_event_list_is_400(sendgrid):
    integration, key, _ = sendgrid

    response = sendgrid_post(integration, key, None, body='{"event": "delivered"}')

    assert response.status_code == 400


def test_a_body_over_the_bound_is_413(sendgrid, settings):
    integration, key, m = sendgrid
    settings.WEBHOOK_MAX_BODY_BYTES = 100

    response = sendgrid_post(integration, key, [event(m, "delivered", n=i) for i in range(5)])

    assert response.status_code == 413
    assert not m.events.exists()


# -- Meta (Instagram) ---------------------------------------------------------------------


def meta_post(body: dict, *, secret=APP_SECRET, header=None):
    raw = json.dumps(body).encode()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return Client().post(
        "/webhooks/instagram/",
        raw,
        content_type="application/json",
        HTTP_X_HUB_SIGNATURE_256=header if header is not None else signature,
    )


def seen(message, **read):
    return {
        "object": "instagram",
        "entry": [
            {
                "id": IG_ID,
                "time": 1762010759340,
                "messaging": [
                    {
                        "sender": {"id": message.to},
                        "recipient": {"id": IG_ID},
                        "timestamp": 1762010759340,
                        "read": read or {"mid": message.provider_message_id},
                    }
                ],
            }
        ],
    }


def test_the_meta_handshake_echoes_the_challenge_only_for_our_verify_token():
    ok = Client().get(
        "/webhooks/instagram/",
        {"hub.mode": "subscribe", "hub.verify_token": "verify-me-7", "hub.challenge": "1158201444"},
    )
    bad = Client().get(
        "/webhooks/instagram/",
        {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"},
    )

    assert (ok.status_code, ok.content) == (200, b"1158201444")
    assert bad.status_code == 403 and b"1158201444" not in bad.content


def test_a_signed_read_receipt_marks_the_message_read(sent):
    m = sent["instagram"]

    response = meta_post(seen(m))

    assert response.status_code == 200, response.content
    m.refresh_from_db()
    assert m.status == MessageStatus.READ


@pytest.mark.parametrize("header", ["", "sha256=" + "0" * 64, "sha1=abc"])
def test_an_unsigned_or_forged_meta_post_is_403(sent, header):
    m = sent["instagram"]

    assert meta_post(seen(m), header=header).status_code == 403
    m.refresh_from_db()
    assert m.status == MessageStatus.SENT


def test_no_app_secret_configured_means_every_meta_post_is_refused(sent, settings):
    settings.META_APP_SECRET = ""

    assert meta_post(seen(sent["instagram"]), secret="").status_code == 403


def test_a_meta_receipt_for_an_unknown_account_is_200_and_dropped(sent):
    body = seen(sent["instagram"])
    body["entry"][0]["id"] = "17841499999999999"

    response = meta_post(body)

    assert response.status_code == 200
    assert response.json()["outcomes"] == {"unknown_message": 1}


# -- Hostile input (found by make security's fuzz) ------------------------------------------


@pytest.mark.parametrize("path", ["/webhooks/twilio/%00/status/", "/webhooks/sendgrid/%00/events/"])
def test_a_nul_or_odd_webhook_key_is_403_not_500(path):
    response = Client(raise_request_exception=False).post(path, b"x", content_type="text/plain")

    assert response.status_code == 403


def test_a_non_ascii_meta_signature_is_403_not_500(sent):
    response = meta_post(seen(sent["instagram"]), header="sha256=\u00e9\u00ff\u00fe")

    assert response.status_code == 403


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": 10**20},
        {"sender": "x"},
        {"read": {"mids": 5}},
        {"read": {"mid": "m\u0000"}},
        {"read": {"watermark": 10**20}},
    ],
)
def test_a_signed_but_out_of_range_meta_receipt_is_400(sent, change):
    body = seen(sent["instagram"])
    body["entry"][0]["messaging"][0].update(change)

    response = meta_post(body)

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "webhook_malformed"


@pytest.mark.parametrize(
    "change",
    [{"timestamp": 100000000000000000}, {"sg_message_id": "x\u0000"}, {"reason": ["a"]}],
)
def test_a_signed_but_out_of_range_sendgrid_event_is_400(sendgrid, change):
    integration, key, m = sendgrid

    response = sendgrid_post(integration, key, [{**event(m, "delivered"), **change}])

    assert response.status_code == 400, response.content
    assert not m.events.exists()


def test_a_signed_twilio_callback_with_nul_is_400(sent):
    m = sent["whatsapp"]

    response = twilio_post(m, twilio_params(m, "delivered", ErrorCode="1\u00002"))

    assert response.status_code == 400
