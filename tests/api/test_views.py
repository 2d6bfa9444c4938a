"""api.views: list, connect, disconnect, envelopes, auth matrix, validation and Test Connection."""

from __future__ import annotations

import json
import logging
import time

import pytest

from shared.crypto import decrypt_token
from shared.models import AuditEvent, Integration, Provider
from tests.factories import (
    CANARY,
    SANDBOX_ACCOUNTS,
    VALID_EXTRA,
    assert_error_envelope,
    assert_no_canary,
    connect_api,
)

pytestmark = pytest.mark.django_db

PROVIDERS = list(Provider.values)


# --- happy paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_admin_connects_each_provider_and_gets_the_envelope(cast, client_for, provider):
    response = connect_api(client_for(cast["admin"]), provider)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["ok"] is True and body["message"]
    integration = body["integration"]
    assert integration["provider"] == provider
    assert integration["is_active"] is True
    assert {"extra", "created_at", "updated_at", "last_tested_at", "last_test_ok"} <= set(
        integration
    )
    assert_no_canary(response.content.decode())
    assert "token" not in json.dumps(integration)


def test_connect_stores_ciphertext_that_decrypts_back(cast, client_for):
    connect_api(client_for(cast["admin"]), "telegram")

    row = Integration.objects.get(organization=cast["admin"].org, provider="telegram")
    assert row.token_encrypted and CANARY["telegram"] not in row.token_encrypted
    assert decrypt_token(row.token_encrypted) == CANARY["telegram"]


def test_connect_again_overwrites_token_and_extra(cast, client_for):
    client = client_for(cast["admin"])
    connect_api(client, "sendgrid")
    second = connect_api(
        client, "sendgrid", token="SG.second.key-value-1234", extra={"from_email": "b@acme.test"}
    )

    assert second.status_code == 200
    rows = Integration.objects.filter(organization=cast["admin"].org, provider="sendgrid")
    assert rows.count() == 1
    assert rows[0].extra == {"from_email": "b@acme.test"}
    assert decrypt_token(rows[0].token_encrypted) == "SG.second.key-value-1234"


def test_google_calendar_defaults_calendar_id_to_primary(cast, client_for):
    response = connect_api(client_for(cast["admin"]), "google_calendar")

    assert response.json()["integration"]["extra"] == {"calendar_id": "primary"}


def test_list_shows_own_integrations_without_any_token_material(cast, client_for):
    admin = client_for(cast["admin"])
    for provider in PROVIDERS:
        connect_api(admin, provider)
    connect_api(
        client_for(cast["outsider"]),
        "telegram",
        token="111222333:otherOrgTokenAbcdefghijklmnopqrstu",
    )

    response = client_for(cast["member"]).get("/api/integrations/")

    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert sorted(item["provider"] for item in body) == sorted(PROVIDERS)
    text = response.content.decode()
    assert_no_canary(text)
    assert "otherOrgToken" not in text
    for item in body:
        assert not {"token", "token_encrypted"} & set(item)


def test_disconnect_is_soft_and_erases_the_token(cast, client_for):
    client = client_for(cast["admin"])
    connect_api(client, "telegram")

    response = client.delete("/api/integrations/telegram/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "ok": True, "message": "Disconnected"}
    row = Integration.objects.get(organization=cast["admin"].org, provider="telegram")
    assert row.is_active is False and row.token_encrypted == ""
    listed = client.get("/api/integrations/").json()
    assert listed[0]["provider"] == "telegram" and listed[0]["is_active"] is False


def test_disconnect_without_a_row_is_404(cast, client_for):
    body = assert_error_envelope(
        client_for(cast["admin"]).delete("/api/integrations/sendgrid/"), 404
    )
    assert "sendgrid" in body["message"]


def test_connect_and_disconnect_are_audited_without_the_token(cast, client_for, caplog):
    client = client_for(cast["admin"])
    with caplog.at_level("INFO", logger="corbi.audit"):
        connect_api(client, "instagram")
        client.delete("/api/integrations/instagram/")

    events = list(AuditEvent.objects.filter(organization=cast["admin"].org).order_by("id"))
    assert [e.action for e in events] == ["integration.connected", "integration.disconnected"]
    assert events[0].token_fingerprint.startswith("sha256:")
    assert events[0].actor == cast["admin"].user
    audit_lines = [r for r in caplog.records if r.name == "corbi.audit"]
    assert [r.audit["event"] for r in audit_lines] == [
        "integration.connected",
        "integration.disconnected",
    ]
    assert audit_lines[0].audit["org_id"] == cast["admin"].org.pk
    assert audit_lines[0].audit["user"] == "alice"
    assert_no_canary(caplog.text + json.dumps([r.audit for r in audit_lines], default=str))


def test_audit_list_is_newest_first_and_admin_only(cast, client_for):
    admin = client_for(cast["admin"])
    connect_api(admin, "telegram")
    admin.delete("/api/integrations/telegram/")
    connect_api(
        client_for(cast["outsider"]),
        "telegram",
        token="111222333:otherOrgTokenAbcdefghijklmnopqrstu",
    )

    response = admin.get("/api/audit/")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["action"] for r in results] == ["integration.disconnected", "integration.connected"]
    assert results[0]["user"] == "alice"
    assert response.json()["count"] == 2
    assert_error_envelope(client_for(cast["member"]).get("/api/audit/"), 403)


# --- auth matrix -----------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/api/integrations/", None),
    ("get", "/api/integrations/telegram/", None),
    ("post", "/api/integrations/telegram/connect/", {"token": CANARY["telegram"], "extra": {}}),
    ("delete", "/api/integrations/telegram/", None),
    ("get", "/api/audit/", None),
]
ADMIN_ONLY = {
    ("post", "/api/integrations/telegram/connect/"),
    ("delete", "/api/integrations/telegram/"),
    ("get", "/api/audit/"),
}


@pytest.fixture
def seeded(cast, client_for):
    """Both orgs have a connected telegram integration."""
    connect_api(client_for(cast["admin"]), "telegram")
    connect_api(
        client_for(cast["outsider"]),
        "telegram",
        token="111222333:otherOrgTokenAbcdefghijklmnopqrstu",
    )
    return cast


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_anonymous_gets_401_everywhere(seeded, client_for, method, url, body):
    client = client_for(None, org_id=seeded["admin"].org.pk)
    assert_error_envelope(getattr(client, method)(url, body, format="json"), 401)


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_invalid_token_gets_401(seeded, client_for, method, url, body):
    client = client_for(None)
    client.credentials(
        HTTP_AUTHORIZATION="Token " + "0" * 40, HTTP_X_ORG_ID=str(seeded["admin"].org.pk)
    )
    assert_error_envelope(getattr(client, method)(url, body, format="json"), 401)


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_admin_of_another_org_gets_404_and_changes_nothing(seeded, client_for, method, url, body):
    before = list(Integration.objects.order_by("pk").values())
    client = client_for(seeded["outsider"], org_id=seeded["admin"].org.pk)

    response = getattr(client, method)(url, body, format="json")

    body = assert_error_envelope(response, 404)
    assert body["message"] == "Organization not found."
    assert list(Integration.objects.order_by("pk").values()) == before


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_unknown_org_answers_like_a_foreign_org(seeded, client_for, method, url, body):
    response = getattr(client_for(seeded["admin"], org_id=999999), method)(url, body, format="json")
    assert assert_error_envelope(response, 404)["message"] == "Organization not found."


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_member_is_403_on_writes_and_200_on_reads(seeded, client_for, method, url, body):
    response = getattr(client_for(seeded["member"]), method)(url, body, format="json")
    if (method, url) in ADMIN_ONLY:
        assert_error_envelope(response, 403)
    else:
        assert response.status_code == 200


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_admin_succeeds_on_every_endpoint(seeded, client_for, method, url, body):
    response = getattr(client_for(seeded["admin"]), method)(url, body, format="json")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("header", [None, "", "abc", "-3", "0", "1.5", "9" * 30])
def test_missing_or_malformed_org_header_is_400(cast, client_for, header):
    client = client_for(None)
    credentials = {"HTTP_AUTHORIZATION": f"Token {cast['admin'].token}"}
    if header is not None:
        credentials["HTTP_X_ORG_ID"] = header
    client.credentials(**credentials)
    body = assert_error_envelope(client.get("/api/integrations/"), 400)
    assert "X-Org-ID" in body["message"]


def test_session_auth_works_too(cast, client_for):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(cast["member"].user)
    response = client.get("/api/integrations/", HTTP_X_ORG_ID=str(cast["member"].org.pk))
    assert response.status_code == 200


# --- validation ------------------------------------------------------------------------------

BAD_EXTRA = [
    ("whatsapp", {"from_whatsapp": "+14155238886"}, "extra.account_sid"),
    ("whatsapp", {"account_sid": "AC123", "from_whatsapp": "+14155238886"}, "extra.account_sid"),
    (
        "whatsapp",
        {"account_sid": "AC" + "0" * 32, "from_whatsapp": "14155238886"},
        "extra.from_whatsapp",
    ),
    ("whatsapp", {"account_sid": "AC" + "0" * 32}, "extra.from_whatsapp"),
    ("whatsapp", {**VALID_EXTRA["whatsapp"], "to_whatsapp": "not-a-number"}, "extra.to_whatsapp"),
    (
        "whatsapp",
        {**VALID_EXTRA["whatsapp"], "from_whatsapp": "+15551234567"},
        "extra.from_whatsapp",
    ),
    ("whatsapp", {**VALID_EXTRA["whatsapp"], "to_whatsapp": "+4412"}, "extra.to_whatsapp"),
    ("sendgrid", {}, "extra.from_email"),
    ("sendgrid", {"from_email": "Acme <noreply@acme.test>"}, "extra.from_email"),
    ("sendgrid", {"from_email": "a@b.test", "to_email": "ops@localhost"}, "extra.to_email"),
    ("sendgrid", {"from_email": "not-an-email"}, "extra.from_email"),
    ("sendgrid", {"from_email": "a@b.test", "to_email": "x@"}, "extra.to_email"),
    ("telegram", {"chat_id": "hello world"}, "extra.chat_id"),
    ("instagram", {}, "extra.instagram_scoped_id"),
    ("instagram", {"instagram_scoped_id": "abc"}, "extra.instagram_scoped_id"),
    ("google_calendar", {"calendar_id": "has space"}, "extra.calendar_id"),
    ("telegram", {"favourite_colour": "blue"}, "extra.favourite_colour"),
]


@pytest.mark.parametrize(("provider", "extra", "field"), BAD_EXTRA)
def test_invalid_extra_is_400_naming_the_field_and_writes_nothing(
    cast, client_for, provider, extra, field
):
    response = connect_api(client_for(cast["admin"]), provider, extra=extra)

    body = assert_error_envelope(response, 400)
    assert field in body["errors"]
    assert field in body["message"]
    assert not Integration.objects.exists()
    assert not AuditEvent.objects.exists()


GOOD_EXTRA = [
    (
        "whatsapp",
        {
            **VALID_EXTRA["whatsapp"],
            "from_whatsapp": "whatsapp:+14155238886",
            "to_whatsapp": "whatsapp:+14155550100",
        },
    ),
    ("sendgrid", {"from_email": "a@b.test", "from_name": "Acme", "to_email": "c@d.test"}),
    ("telegram", {"chat_id": -1001234567890}),
    ("telegram", {"chat_id": "@acme_channel", "parse_mode": "HTML"}),
    ("instagram", {"instagram_scoped_id": 17841400000000001}),
    ("google_calendar", {"calendar_id": "team@group.calendar.google.com"}),
]


@pytest.mark.parametrize(("provider", "extra"), GOOD_EXTRA)
def test_valid_extra_variants_are_accepted(cast, client_for, provider, extra):
    response = connect_api(client_for(cast["admin"]), provider, extra=extra)
    assert response.status_code == 200, response.content


NORMALIZED_EXTRA = [
    (
        "whatsapp",
        {**VALID_EXTRA["whatsapp"], "from_whatsapp": "whatsapp:+1 415 523 8886"},
        {"from_whatsapp": "+14155238886"},
    ),
    (
        "sendgrid",
        {"from_email": "NoReply@Acme.TEST", "to_email": " Ops@ACME.test "},
        {"from_email": "NoReply@acme.test", "to_email": "Ops@acme.test"},
    ),
]


@pytest.mark.parametrize(("provider", "extra", "stored"), NORMALIZED_EXTRA)
def test_extra_recipients_are_stored_normalized(cast, client_for, provider, extra, stored):
    response = connect_api(client_for(cast["admin"]), provider, extra=extra)

    assert response.status_code == 200, response.content
    saved = Integration.objects.get(provider=provider).extra
    assert {name: saved[name] for name in stored} == stored


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "auth_token",
        "client_secret",
        "password",
        "api_key",
        "apiKey",
        "Authorization",
        "refresh_token",
    ],
)
def test_extra_refuses_keys_that_name_a_secret(cast, client_for, key):
    extra = {**VALID_EXTRA["sendgrid"], key: "whatever-value"}
    body = assert_error_envelope(
        connect_api(client_for(cast["admin"]), "sendgrid", extra=extra), 400
    )
    assert f"extra.{key}" in body["errors"]
    assert "secret" in body["errors"][f"extra.{key}"][0]


@pytest.mark.parametrize(
    ("provider", "token"),
    [
        ("telegram", "not-a-bot-token"),
        ("sendgrid", "no-sg-prefix"),
        ("google_calendar", '{"refresh_token": "x"}'),
        ("telegram", "1" * 5000),
    ],
)
def test_malformed_tokens_are_400_on_token_without_echo(cast, client_for, provider, token):
    response = connect_api(client_for(cast["admin"]), provider, token=token)
    body = assert_error_envelope(response, 400)
    assert "token" in body["errors"]
    assert token not in response.content.decode()


def test_missing_token_is_400(cast, client_for):
    response = client_for(cast["admin"]).post(
        "/api/integrations/telegram/connect/", {"extra": {}}, format="json"
    )
    assert "token" in assert_error_envelope(response, 400)["errors"]


def test_oversized_extra_is_400(cast, client_for):
    extra = {f"k{i}": "v" for i in range(50)}
    body = assert_error_envelope(
        connect_api(client_for(cast["admin"]), "telegram", extra=extra), 400
    )
    assert "extra" in body["errors"]


def test_extra_must_be_an_object(cast, client_for):
    response = client_for(cast["admin"]).post(
        "/api/integrations/telegram/connect/",
        {"token": CANARY["telegram"], "extra": [1, 2]},
        format="json",
    )
    assert "extra" in assert_error_envelope(response, 400)["errors"]


def test_unknown_provider_is_404_listing_the_valid_ones(cast, client_for):
    response = client_for(cast["admin"]).post(
        "/api/integrations/fax/connect/", {"token": "x"}, format="json"
    )
    body = assert_error_envelope(response, 404)
    for provider in PROVIDERS:
        assert provider in body["message"]


def test_read_only_fields_in_the_body_are_ignored(cast, client_for):
    other_org = cast["outsider"].org.pk
    response = client_for(cast["admin"]).post(
        "/api/integrations/telegram/connect/",
        {
            "token": CANARY["telegram"],
            "extra": {},
            "organization": other_org,
            "is_active": False,
            "created_at": "2000-01-01T00:00:00Z",
            "last_test_ok": True,
            "provider": "sendgrid",
        },
        format="json",
    )
    assert response.status_code == 200
    row = Integration.objects.get()
    assert row.organization_id == cast["admin"].org.pk and row.provider == "telegram"
    assert row.is_active is True and row.last_test_ok is None
    assert row.created_at.year > 2000


# --- malformed requests ----------------------------------------------------------------------


def test_malformed_json_is_400_in_the_envelope(cast, client_for):
    response = client_for(cast["admin"]).post(
        "/api/integrations/telegram/connect/", data="{not json", content_type="application/json"
    )
    assert assert_error_envelope(response, 400)["message"] == "Malformed JSON in the request body."


def test_wrong_content_type_is_415_in_the_envelope(cast, client_for):
    response = client_for(cast["admin"]).post(
        "/api/integrations/telegram/connect/",
        data="token=x",
        content_type="application/x-www-form-urlencoded",
    )
    assert_error_envelope(response, 415)


def test_wrong_method_is_405_in_the_envelope(cast, client_for):
    assert_error_envelope(
        client_for(cast["admin"]).put("/api/integrations/", {}, format="json"), 405
    )


def test_unknown_api_url_is_json_404(cast, client_for):
    response = client_for(cast["admin"]).get("/api/nothing-here/")
    assert_error_envelope(response, 404)


# === Test Connection: POST /api/integrations/{provider}/test/ =================================


SENDING = ["whatsapp", "sendgrid", "telegram"]
BUDGET_SECONDS = 1.0


# What each probe reports about the sandbox's default account.
PROBE_SAYS = {
    "whatsapp": "Twilio account Corbi sandbox account (active, Full)",
    "sendgrid": "SendGrid API key with mail.send",
    "telegram": "Telegram bot @corbi_sandbox_bot",
    "instagram": "Instagram account @corbi.sandbox",
    "google_calendar": "Google Calendar '",
}

DESTINATIONS = {
    "whatsapp": {"to_whatsapp": "+14155550100"},
    "sendgrid": {"to_email": "ops@acme.test"},
    "telegram": {"chat_id": "4242"},
}

# The text each adapter gives when the sandbox does not know the token.
REJECTED_SAYS = {
    "whatsapp": "Twilio rejected the credentials (20003)",
    "sendgrid": "SendGrid rejected the API key (401)",
    "telegram": "Telegram rejected the bot token (401 Unauthorized)",
    "instagram": "Instagram rejected the access token (190)",
    "google_calendar": "Google rejected the access token",
}

SEND_SUFFIX = {
    "whatsapp": "/Messages.json",
    "sendgrid": "/v3/mail/send",
    "telegram": "/sendMessage",
    "instagram": "/messages",
    "google_calendar": "/events",
}

LEAKY_LOGGERS = [
    "urllib3",
    "twilio",
    "twilio.http_client",
    "python_http_client",
    "googleapiclient",
    "googleapiclient.discovery",
    "google_auth_httplib2",
    "google.auth",
]


@pytest.fixture
def admin(cast, client_for, providers_on_sandbox, settings):
    """acme's admin client; every provider on the sandbox and a short Test Connection budget."""
    settings.TEST_CONNECTION_TIMEOUT_SECONDS = BUDGET_SECONDS
    return client_for(cast["admin"])


def register(sandbox_client, provider, **fields):
    return sandbox_client.add_account(provider, **{**SANDBOX_ACCOUNTS[provider], **fields})


def connected(client, provider, extra=None, token=None):
    """Connect through the API with VALID_EXTRA updated by `extra`; the connect must succeed."""
    response = connect_api(client, provider, token, {**VALID_EXTRA[provider], **(extra or {})})
    assert response.status_code == 200, response.content
    return response


def run_test(client, provider, body=None):
    return client.post(f"/api/integrations/{provider}/test/", body or {}, format="json")


def sends(sandbox_client, provider):
    """The recorded requests that tried to deliver a message (not the read-only probes)."""
    return [
        r
        for r in sandbox_client.requests(provider)
        if r["method"] == "POST" and r["path"].endswith(SEND_SUFFIX[provider])
    ]


def audited_tests(org):
    return list(
        AuditEvent.objects.filter(organization=org, action="integration.tested").order_by("id")
    )


def assert_failed(response):
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "error" and body["ok"] is False
    assert body["integration"]["last_test_ok"] is False
    assert body["integration"]["last_tested_at"]
    assert body["integration"]["last_test_message"] == body["message"]
    return body


# --- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_valid_credentials_pass_with_a_read_only_probe(cast, admin, sandbox_client, provider):
    register(sandbox_client, provider)
    connected(admin, provider)

    response = run_test(admin, provider)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["ok"] is True
    assert PROBE_SAYS[provider] in body["checks"]["credentials"]
    assert "test_message" not in body["checks"]
    assert "credentials accepted" in body["message"]
    integration = body["integration"]
    assert integration["last_test_ok"] is True and integration["last_tested_at"]
    assert integration["credentials_rejected"] is False
    assert sandbox_client.requests(provider), "the probe never reached the sandbox"
    assert sends(sandbox_client, provider) == []
    assert_no_canary(response.content.decode())


@pytest.mark.parametrize("provider", SENDING)
def test_stored_destination_gets_exactly_one_test_message(cast, admin, sandbox_client, provider):
    register(sandbox_client, provider)
    connected(admin, provider, extra=DESTINATIONS[provider])

    response = run_test(admin, provider)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ok"] is True and body["status"] == "ok", body["message"]
    assert PROBE_SAYS[provider] in body["checks"]["credentials"]
    recorded = sends(sandbox_client, provider)
    assert len(recorded) == 1
    message = body["checks"]["test_message"]
    assert message["message_id"] and message["message_id"] == recorded[0]["message_id"]
    assert message["to"] == next(iter(DESTINATIONS[provider].values()))
    assert "test message sent to" in body["message"]
    assert_no_canary(response.content.decode())


def test_destination_given_for_one_call_is_used_but_not_stored(cast, admin, sandbox_client):
    register(sandbox_client, "telegram")
    connected(admin, "telegram")

    response = run_test(admin, "telegram", {"extra": {"chat_id": 4242}})

    body = response.json()
    assert body["ok"] is True, body["message"]
    recorded = sends(sandbox_client, "telegram")
    assert len(recorded) == 1 and recorded[0]["body"]["chat_id"] == "4242"
    assert body["checks"]["test_message"] == {"to": "4242", "message_id": "4242:1"}
    assert body["integration"]["extra"] == {}
    row = Integration.objects.get(organization=cast["admin"].org, provider="telegram")
    assert row.extra == {}

    again = run_test(admin, "telegram")

    assert again.json()["ok"] is True and "test_message" not in again.json()["checks"]
    assert len(sends(sandbox_client, "telegram")) == 1


def test_destination_given_for_one_call_overrides_the_stored_one(cast, admin, sandbox_client):
    register(sandbox_client, "sendgrid")
    connected(admin, "sendgrid", extra={"to_email": "stored@acme.test"})

    body = run_test(admin, "sendgrid", {"extra": {"to_email": "once@acme.test"}}).json()

    assert body["ok"] is True, body["message"]
    (recorded,) = sends(sandbox_client, "sendgrid")
    assert recorded["body"]["personalizations"][0]["to"] == [{"email": "once@acme.test"}]
    row = Integration.objects.get(organization=cast["admin"].org, provider="sendgrid")
    assert row.extra["to_email"] == "stored@acme.test"


def test_google_authorized_user_json_refreshes_through_the_settings_token_uri(
    cast, admin, sandbox_client
):
    refresh = "1//cnryRefreshTk4Wn8Lx2Pq6Vb3Zs"
    secret = "cnryClientSecret7Hd2Kf9Qm"
    sandbox_client.add_account(
        "google_calendar", refresh_token=refresh, client_id="cid.apps", client_secret=secret
    )
    token = json.dumps({"refresh_token": refresh, "client_id": "cid.apps", "client_secret": secret})
    connected(admin, "google_calendar", token=token)

    response = run_test(admin, "google_calendar")

    assert response.json()["ok"] is True, response.json()["message"]
    paths = [r["path"] for r in sandbox_client.requests("google_calendar")]
    assert paths[0] == "/token"
    assert_no_canary(response.content.decode(), {"refresh": refresh, "secret": secret})


# --- provider says no ------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_credentials_fail_and_mark_the_integration_rejected(
    cast, admin, sandbox_client, provider
):
    connected(admin, provider)  # the sandbox has no account for this token

    body = assert_failed(run_test(admin, provider))

    assert REJECTED_SAYS[provider] in body["message"]
    assert body["integration"]["credentials_rejected"] is True
    assert body["checks"] == {}
    row = Integration.objects.get(organization=cast["admin"].org, provider=provider)
    assert row.credentials_rejected_at is not None and row.last_test_ok is False
    assert sends(sandbox_client, provider) == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_later_successful_test_clears_credentials_rejected(cast, admin, sandbox_client, provider):
    connected(admin, provider)
    assert run_test(admin, provider).json()["integration"]["credentials_rejected"] is True
    register(sandbox_client, provider)

    body = run_test(admin, provider).json()

    assert body["ok"] is True, body["message"]
    assert body["integration"]["credentials_rejected"] is False
    assert body["integration"]["last_test_ok"] is True
    row = Integration.objects.get(organization=cast["admin"].org, provider=provider)
    assert row.credentials_rejected_at is None


def test_suspended_twilio_account_is_reported_as_rejected_credentials(cast, admin, sandbox_client):
    register(sandbox_client, "whatsapp", status="suspended")
    connected(admin, "whatsapp")

    body = assert_failed(run_test(admin, "whatsapp"))

    assert "Twilio rejected the credentials" in body["message"]
    assert body["integration"]["credentials_rejected"] is True


def test_sendgrid_key_without_mail_send_scope_is_rejected(cast, admin, sandbox_client):
    register(sandbox_client, "sendgrid", scopes=["user.profile.read"])
    connected(admin, "sendgrid")

    body = assert_failed(run_test(admin, "sendgrid"))

    assert body["message"] == "SendGrid API key lacks the mail.send scope"
    assert body["integration"]["credentials_rejected"] is True


INVALID_RECIPIENTS = [
    ("whatsapp", {"to_whatsapp": "+15005550001"}, "(21211)"),
    ("whatsapp", {"to_whatsapp": "+15005550002"}, "(21408)"),
    ("sendgrid", {"to_email": "invalid@sandbox.test"}, "(personalizations.0.to.0.email)"),
    ("telegram", {"chat_id": "404"}, "Telegram: chat not found"),
    ("telegram", {"chat_id": "403"}, "Telegram: bot was blocked by the user"),
]


@pytest.mark.parametrize(("provider", "destination", "text"), INVALID_RECIPIENTS)
def test_invalid_recipient_fails_with_the_providers_reason(
    cast, admin, sandbox_client, provider, destination, text
):
    register(sandbox_client, provider)
    connected(admin, provider, extra=destination)

    body = assert_failed(run_test(admin, provider))

    assert text in body["message"]
    assert PROBE_SAYS[provider] in body["checks"]["credentials"]
    assert "test_message" not in body["checks"]
    assert body["integration"]["credentials_rejected"] is False
    assert len(sends(sandbox_client, provider)) == 1


def test_unverified_sendgrid_sender_is_not_a_credentials_problem(cast, admin, sandbox_client):
    register(sandbox_client, "sendgrid", verified_senders=["someone-else@acme.test"])
    connected(admin, "sendgrid", extra=DESTINATIONS["sendgrid"])

    body = assert_failed(run_test(admin, "sendgrid"))

    assert body["message"] == "SendGrid: the from address is not a verified sender"
    assert body["integration"]["credentials_rejected"] is False


# The text each adapter gives for the sandbox's generated 503 body.
FAULT_SAYS = {
    "whatsapp": "(20503)",
    "sendgrid": "SendGrid: service unavailable",
    "telegram": "Telegram: Service Unavailable",
    "instagram": "Please retry your request later. (2)",
    "google_calendar": "(503)",
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_503_fails_without_marking_credentials_rejected(
    cast, admin, sandbox_client, provider
):
    register(sandbox_client, provider)
    connected(admin, provider)
    sandbox_client.fault(provider, status=503, count=1)

    body = assert_failed(run_test(admin, provider))

    assert FAULT_SAYS[provider] in body["message"]
    assert body["integration"]["credentials_rejected"] is False
    (event,) = audited_tests(cast["admin"].org)
    assert event.data["ok"] is False and event.data["error_kind"] == "transient"


SEND_PATHS = {
    "whatsapp": f"/2010-04-01/Accounts/{VALID_EXTRA['whatsapp']['account_sid']}/Messages.json",
    "sendgrid": "/v3/mail/send",
    "telegram": f"/bot{CANARY['telegram']}/sendMessage",
}


@pytest.mark.parametrize("provider", SENDING)
def test_provider_503_on_the_test_message_fails_after_a_good_probe(
    cast, admin, sandbox_client, provider
):
    register(sandbox_client, provider)
    connected(admin, provider, extra=DESTINATIONS[provider])
    sandbox_client.fault(provider, status=503, count=1, path=SEND_PATHS[provider])

    body = assert_failed(run_test(admin, provider))

    assert PROBE_SAYS[provider] in body["checks"]["credentials"]
    assert "test_message" not in body["checks"]
    assert body["integration"]["credentials_rejected"] is False
    assert [r["outcome"] for r in sends(sandbox_client, provider)] == ["fault:503"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_that_never_answers_fails_within_the_budget(cast, admin, sandbox_client, provider):
    register(sandbox_client, provider)
    connected(admin, provider)
    sandbox_client.fault(provider, mode="timeout", count=1)

    started = time.monotonic()
    response = run_test(admin, provider)
    elapsed = time.monotonic() - started

    body = assert_failed(response)
    assert f"did not answer within {BUDGET_SECONDS:g} s" in body["message"]
    assert elapsed < BUDGET_SECONDS + 3
    assert body["integration"]["credentials_rejected"] is False
    assert [r["outcome"] for r in sandbox_client.requests(provider)][:1] == ["timeout"]


def test_slow_probe_leaves_no_time_for_the_test_message(cast, admin, sandbox_client):
    register(sandbox_client, "telegram")
    connected(admin, "telegram", extra=DESTINATIONS["telegram"])
    probe = f"/bot{CANARY['telegram']}/getMe"
    sandbox_client.fault("telegram", mode="latency", latency_ms=700, count=1, path=probe)

    started = time.monotonic()
    body = assert_failed(run_test(admin, "telegram"))
    elapsed = time.monotonic() - started

    assert f"did not answer within {BUDGET_SECONDS:g} s" in body["message"]
    assert PROBE_SAYS["telegram"] in body["checks"]["credentials"]
    assert sends(sandbox_client, "telegram") == []
    assert elapsed < BUDGET_SECONDS + 0.5


def test_google_probe_with_a_token_refresh_stays_within_the_whole_budget(
    cast, admin, sandbox_client
):
    refresh = "1//cnryRefreshTk4Wn8Lx2Pq6Vb3Zs"
    secret = "cnryClientSecret7Hd2Kf9Qm"
    sandbox_client.add_account(
        "google_calendar", refresh_token=refresh, client_id="cid.apps", client_secret=secret
    )
    token = json.dumps({"refresh_token": refresh, "client_id": "cid.apps", "client_secret": secret})
    connected(admin, "google_calendar", token=token)
    sandbox_client.fault("google_calendar", mode="latency", latency_ms=900, count=1, path="/token")
    sandbox_client.fault("google_calendar", mode="timeout", count=1, path="/calendar/v3/")

    started = time.monotonic()
    body = assert_failed(run_test(admin, "google_calendar"))
    elapsed = time.monotonic() - started

    assert f"did not answer within {BUDGET_SECONDS:g} s" in body["message"]
    assert elapsed < BUDGET_SECONDS + 0.5


def test_token_that_no_longer_decrypts_fails_as_a_missing_key_not_rejected_credentials(
    cast, admin, sandbox_client, settings
):
    register(sandbox_client, "telegram")
    connected(admin, "telegram")
    settings.FERNET_KEYS = ["R0tPlWk8V1pG3hV0n1sYqk3e2aF4o9sX7b2m5c8d1e4="]

    body = assert_failed(run_test(admin, "telegram"))

    assert body["message"] == "The stored token does not decrypt with any FERNET_KEY."
    assert body["integration"]["credentials_rejected"] is False
    assert body["integration"]["key_unavailable"] is True
    assert sandbox_client.requests("telegram") == []
    (event,) = audited_tests(cast["admin"].org)
    assert event.data["error_kind"] == "key_unavailable"


# --- audit -----------------------------------------------------------------------------------


def test_every_test_is_audited_once_with_its_outcome(cast, admin, sandbox_client):
    connected(admin, "telegram")
    run_test(admin, "telegram")
    register(sandbox_client, "telegram")
    run_test(admin, "telegram")

    events = audited_tests(cast["admin"].org)

    assert [e.data["ok"] for e in events] == [False, True]
    assert [e.data["error_kind"] for e in events] == ["credentials", ""]
    assert all(e.provider == "telegram" and e.actor == cast["admin"].user for e in events)
    assert "rejected" in events[0].data["message"]
    assert_no_canary(json.dumps([e.data for e in events]))


def test_rejected_requests_are_not_audited_and_do_not_touch_the_row(cast, admin, sandbox_client):
    register(sandbox_client, "telegram")
    connected(admin, "telegram")

    assert_error_envelope(run_test(admin, "telegram", {"extra": {"token": "x"}}), 400)

    assert audited_tests(cast["admin"].org) == []
    row = Integration.objects.get(organization=cast["admin"].org, provider="telegram")
    assert row.last_tested_at is None and row.last_test_ok is None
    assert sandbox_client.requests("telegram") == []


# --- who may test what -----------------------------------------------------------------------


def test_provider_not_connected_is_404(cast, admin, sandbox_client):
    body = assert_error_envelope(run_test(admin, "telegram"), 404)
    assert "telegram" in body["message"]


def test_disconnected_integration_is_404_and_calls_nobody(cast, admin, sandbox_client):
    register(sandbox_client, "telegram")
    connected(admin, "telegram")
    assert admin.delete("/api/integrations/telegram/").status_code == 200

    body = assert_error_envelope(run_test(admin, "telegram"), 404)

    assert "telegram" in body["message"]
    assert sandbox_client.requests("telegram") == []
    assert audited_tests(cast["admin"].org) == []


def test_unknown_provider_is_404(cast, admin, sandbox_client):
    assert_error_envelope(run_test(admin, "fax"), 404)


def test_member_cannot_test_a_connection(cast, admin, client_for, sandbox_client):
    register(sandbox_client, "telegram")
    connected(admin, "telegram")

    assert_error_envelope(run_test(client_for(cast["member"]), "telegram"), 403)

    assert sandbox_client.requests("telegram") == []
    assert audited_tests(cast["admin"].org) == []


def test_admin_of_another_org_gets_404_for_this_orgs_integration(
    cast, admin, client_for, sandbox_client
):
    register(sandbox_client, "telegram")
    connected(admin, "telegram")
    outsider = client_for(cast["outsider"], org_id=cast["admin"].org.pk)

    body = assert_error_envelope(run_test(outsider, "telegram"), 404)

    assert body["message"] == "Organization not found."
    assert sandbox_client.requests("telegram") == []
    row = Integration.objects.get(organization=cast["admin"].org, provider="telegram")
    assert row.last_tested_at is None


def test_admin_of_another_org_cannot_reach_it_from_their_own_org(
    cast, admin, client_for, sandbox_client
):
    register(sandbox_client, "telegram")
    connected(admin, "telegram")

    assert_error_envelope(run_test(client_for(cast["outsider"]), "telegram"), 404)

    assert sandbox_client.requests("telegram") == []


def test_anonymous_gets_401(cast, admin, client_for, sandbox_client):
    connected(admin, "telegram")
    client = client_for(None, org_id=cast["admin"].org.pk)
    assert_error_envelope(run_test(client, "telegram"), 401)


# --- malformed bodies ------------------------------------------------------------------------

BAD_BODIES = [
    ("telegram", {"extra": [1]}, "extra"),
    ("telegram", {"extra": "chat_id=4242"}, "extra"),
    ("telegram", {"extra": {"token": "x"}}, "extra.token"),
    ("telegram", {"extra": {"parse_mode": "HTML"}}, "extra.parse_mode"),
    ("telegram", {"extra": {"chat_id": "not a chat"}}, "extra.chat_id"),
    ("whatsapp", {"extra": {"account_sid": "AC" + "1" * 32}}, "extra.account_sid"),
    ("whatsapp", {"extra": {"to_whatsapp": "5551234"}}, "extra.to_whatsapp"),
    ("sendgrid", {"extra": {"from_email": "evil@other.test"}}, "extra.from_email"),
    ("sendgrid", {"extra": {"to_email": "nobody@"}}, "extra.to_email"),
    ("instagram", {"extra": {"instagram_scoped_id": "1"}}, "extra.instagram_scoped_id"),
    ("google_calendar", {"extra": {"calendar_id": "other"}}, "extra.calendar_id"),
]


@pytest.mark.parametrize(("provider", "body", "field"), BAD_BODIES)
def test_malformed_body_is_400_naming_the_field(cast, admin, sandbox_client, provider, body, field):
    register(sandbox_client, provider)
    connected(admin, provider)

    response = run_test(admin, provider, body)

    envelope = assert_error_envelope(response, 400)
    assert field in envelope["errors"]
    assert field in envelope["message"]
    assert sandbox_client.requests(provider) == []
    assert audited_tests(cast["admin"].org) == []


def test_malformed_json_to_test_is_400_in_the_envelope(cast, admin, sandbox_client):
    connected(admin, "telegram")
    response = admin.post(
        "/api/integrations/telegram/test/", data="{nope", content_type="application/json"
    )
    assert assert_error_envelope(response, 400)["message"] == "Malformed JSON in the request body."


def test_empty_extra_means_use_what_is_stored(cast, admin, sandbox_client):
    register(sandbox_client, "telegram")
    connected(admin, "telegram", extra={"chat_id": "4242"})

    body = run_test(admin, "telegram", {"extra": {}}).json()

    assert body["ok"] is True and body["checks"]["test_message"]["to"] == "4242"


# --- no secrets anywhere ---------------------------------------------------------------------


def debug_everywhere(caplog):
    caplog.set_level(logging.DEBUG)
    for name in LEAKY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_token_in_responses_or_debug_logs_on_success_and_failure(
    cast, admin, sandbox_client, caplog, provider
):
    debug_everywhere(caplog)
    extra = DESTINATIONS.get(provider)
    connected(admin, provider, extra=extra)
    failed = run_test(admin, provider)
    register(sandbox_client, provider)
    passed = run_test(admin, provider)
    sandbox_client.fault(provider, status=500, count=1)
    errored = run_test(admin, provider)
    sandbox_client.fault(provider, mode="timeout", count=1)
    timed_out = run_test(admin, provider)

    assert [r.json()["ok"] for r in (failed, passed, errored, timed_out)] == [
        False,
        True,
        False,
        False,
    ], passed.json()["message"]
    assert caplog.records, "nothing was captured at DEBUG"
    for response in (failed, passed, errored, timed_out):
        assert_no_canary(response.content.decode())
    assert_no_canary(caplog.text)
    assert_no_canary(json.dumps([e.data for e in audited_tests(cast["admin"].org)]))
    row = Integration.objects.get(organization=cast["admin"].org, provider=provider)
    assert_no_canary(row.last_test_message + json.dumps(row.extra))
