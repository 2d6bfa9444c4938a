"""shared.redaction: known shapes, remembered and encoded values, and one tenant never censoring another."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import quote

import pytest

from bench.security import count_encoded_leaks, count_leaks
from corbi.audit import AuditFormatter
from corbi.logging import RedactingFilter, RedactingFormatter, install_record_factory
from shared.crypto import decrypt_token
from shared.models import Integration
from shared.redaction import REDACTED, forget_secrets, redact, remember_secret, scrub_values
from shared.services.audit import audit_event_record
from tests.factories import CANARY, VALID_EXTRA, assert_no_canary

pytestmark = pytest.mark.django_db

CLIENT_SECRET = "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"
REFRESH_TOKEN = "1//0gcnryRt5Wn9Kx3Bv7Lm2Qp6Zd4Hs8JfAb"
GOOGLE_JSON = json.dumps(
    {
        "type": "authorized_user",
        "client_id": "1234567890-abc.apps.googleusercontent.com",
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }
)


@pytest.fixture
def lines():
    """Everything the console and audit handlers print, formatted as in production."""
    install_record_factory()
    console, audit = io.StringIO(), io.StringIO()
    console_handler = logging.StreamHandler(console)
    console_handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    audit_handler = logging.StreamHandler(audit)
    audit_handler.setFormatter(AuditFormatter())
    for handler in (console_handler, audit_handler):
        handler.addFilter(RedactingFilter())
    app, audit_logger = logging.getLogger("tests.tenant"), logging.getLogger("corbi.audit")
    app.addHandler(console_handler)
    audit_logger.addHandler(audit_handler)
    forget_secrets()
    yield lambda: console.getvalue() + audit.getvalue()
    app.removeHandler(console_handler)
    audit_logger.removeHandler(audit_handler)


def connect_and_decrypt(client, provider: str, token: str, extra: dict) -> None:
    response = client.post(
        f"/api/integrations/{provider}/connect/",
        {"token": token, "extra": extra},
        format="json",
    )
    assert response.status_code == 200, response.content
    row = Integration.objects.get(organization_id=client.org_id, provider=provider)
    decrypt_token(row.token_encrypted)  # what a worker does before every send


def test_words_one_org_connects_as_tokens_do_not_censor_another_orgs_lines(cast, client_for, lines):
    acme = cast["admin"].org
    globex = client_for(cast["outsider"])
    globex.org_id = cast["outsider"].org.pk
    org_id_words = f'"org_id": {acme.pk}'
    connect_and_decrypt(globex, "whatsapp", "message.failed", VALID_EXTRA["whatsapp"])
    connect_and_decrypt(globex, "instagram", org_id_words, VALID_EXTRA["instagram"])
    connect_and_decrypt(globex, "google_calendar", GOOGLE_JSON, {})

    audit_event_record(
        organization=acme,
        action="message.failed",
        provider="sendgrid",
        data={"error": "Google needs client_id, client_secret and refresh_token"},
    )
    logging.getLogger("tests.tenant").warning(
        "message.failed for acme: the JSON lacks client_id, client_secret and refresh_token"
    )

    text = lines()
    for words in ("message.failed", org_id_words, "client_id", "client_secret", "refresh_token"):
        assert words in text, words
    assert REDACTED not in text


def test_the_secret_values_of_a_google_json_token_stay_redacted_in_every_form(
    cast, client_for, lines
):
    globex = client_for(cast["outsider"])
    globex.org_id = cast["outsider"].org.pk
    connect_and_decrypt(globex, "google_calendar", GOOGLE_JSON, {})
    basic = base64.b64encode(f"1234567890-abc:{CLIENT_SECRET}".encode()).decode()

    logging.getLogger("tests.tenant").warning(
        "refresh failed: client_secret=%s refresh_token=%s echoed %s and %s in %s",
        CLIENT_SECRET,
        REFRESH_TOKEN,
        quote(REFRESH_TOKEN, safe=""),
        basic,
        quote(GOOGLE_JSON, safe=""),
    )

    text = lines()
    secrets = {"client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}
    assert_no_canary(text, secrets)
    assert count_encoded_leaks(text, secrets) == 0, text
    assert "client_secret=" in text and "refresh_token=" in text


def test_every_canary_token_is_still_redacted_plain_and_encoded(cast, client_for, lines):
    admin = client_for(cast["admin"])
    admin.org_id = cast["admin"].org.pk
    for provider, token in CANARY.items():
        connect_and_decrypt(admin, provider, token, VALID_EXTRA[provider])

    logger = logging.getLogger("tests.tenant")
    for provider, token in CANARY.items():
        basic = base64.b64encode(f"user:{token}".encode()).decode()
        logger.warning("%s echoed %s, (%s) %s and %s.", provider, token, quote(token), basic, token)

    text = lines()
    assert_no_canary(text)
    assert count_encoded_leaks(text, CANARY) == 0, text


@pytest.mark.parametrize(
    "token",
    [
        "message.failed",
        '"org_id": 1',
        "integration.connected",
        "TokenDecryptionError",
        "2026-11-29T07:15:2",
        "corbi.audit",
    ],
)
def test_a_value_that_is_not_secret_shaped_is_not_remembered(token):
    forget_secrets()
    remember_secret(token)
    line = f"2026-11-29T07:15:23 corbi.audit TokenDecryptionError message.failed {token}"
    assert redact(line) == line


# '+', '/', '=' and '~' make the percent-encoded and URL-safe base64 forms differ from the token.
ENCODED_TOKEN = "cnry+Wa/Qx=7Zp9Kd3Lm5~Vb2Hj8Ws4Ny6Rf1"
SID = VALID_EXTRA["whatsapp"]["account_sid"]


def leaks(text: str) -> int:
    tokens = {"whatsapp": ENCODED_TOKEN}
    return count_leaks(text, tokens) + count_encoded_leaks(text, tokens)


@pytest.mark.parametrize("offset", ["", "a", "ab", "abc"])
def test_base64_of_a_remembered_secret_is_redacted_at_every_alignment(offset):
    secret = "cnryB64x7Zp9Kd3Lm5Vb2Hj8Ws4Ny6Rf1Qq"
    remember_secret(secret)
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        echoed = encode(f"{offset}{secret}:tail".encode()).decode()
        out = redact(f"header was {echoed} end")
        assert REDACTED in out
        assert count_encoded_leaks(out, {"s": secret}) == 0, out


def test_scrub_values_replaces_percent_encoded_and_base64_forms():
    basic = base64.b64encode(f"{SID}:{ENCODED_TOKEN}".encode()).decode()
    for echo in (quote(ENCODED_TOKEN, safe=""), basic, quote(basic, safe=""), f"x{ENCODED_TOKEN}y"):
        assert leaks(echo) > 0, echo  # the detector sees each form
        assert leaks(scrub_values(f"echo {echo} end", [ENCODED_TOKEN], "<x>")) == 0, echo
    text = f"a {quote(ENCODED_TOKEN, safe='')} b {base64.b64encode(('u:' + ENCODED_TOKEN).encode()).decode()} c"
    out = scrub_values(text, [ENCODED_TOKEN], "<x>")
    assert out.startswith("a <x> b ") and leaks(out) == 0


SHAPES = [
    "GET http://127.0.0.1:9/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1/getMe",
    "key=SG.abcdefghijklmnop.qrstuvwxyzABCDEFGHIJ",
    "token ya29.a0AfH6SMBx-very-long-google-token",
    "refresh 1//0gAbCdEfGhIjKlMnOpQrStUv",
    "Authorization: Bearer some.opaque-token_value",
    "{'Authorization': 'Basic QUMxMjM0NTY6c2VjcmV0'}",
    "https://graph.test/v23.0/me?access_token=EAAbcdefghijklmnopqrstu&fields=id",
]


@pytest.mark.parametrize("line", SHAPES)
def test_known_token_shapes_are_redacted(line):
    out = redact(line)
    assert REDACTED in out
    for secret in (
        "AAHdqTcv",
        "abcdefghijklmnop",
        "a0AfH6SM",
        "0gAbCdEf",
        "opaque-token",
        "QUMxMjM0",
        "EAAbcdef",
    ):
        assert secret not in out


def test_remembered_values_are_redacted_even_without_a_known_shape():
    remember_secret("plain-twilio-auth-token-value-0042")
    assert (
        redact("failed with plain-twilio-auth-token-value-0042 inside")
        == f"failed with {REDACTED} inside"
    )
