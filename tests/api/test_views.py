"""The seed contract: list, connect, disconnect, envelopes, auth matrix and validation."""

from __future__ import annotations

import json

import pytest

from shared.crypto import decrypt_token
from shared.models import AuditEvent, Integration, Provider
from tests.factories import CANARY, VALID_EXTRA, assert_no_canary

pytestmark = pytest.mark.django_db

PROVIDERS = list(Provider.values)


def connect(client, provider, token=None, extra=None):
    body = {
        "token": token or CANARY[provider],
        "extra": VALID_EXTRA[provider] if extra is None else extra,
    }
    return client.post(f"/api/integrations/{provider}/connect/", body, format="json")


def assert_error_envelope(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "error"
    assert body["ok"] is False
    assert isinstance(body["message"], str) and body["message"]
    return body


# --- happy paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_admin_connects_each_provider_and_gets_the_envelope(cast, client_for, provider):
    response = connect(client_for(cast["admin"]), provider)

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
    connect(client_for(cast["admin"]), "telegram")

    row = Integration.objects.get(organization=cast["admin"].org, provider="telegram")
    assert row.token_encrypted and CANARY["telegram"] not in row.token_encrypted
    assert decrypt_token(row.token_encrypted) == CANARY["telegram"]


def test_connect_again_overwrites_token_and_extra(cast, client_for):
    client = client_for(cast["admin"])
    connect(client, "sendgrid")
    second = connect(
        client, "sendgrid", token="SG.second.key-value-1234", extra={"from_email": "b@acme.test"}
    )

    assert second.status_code == 200
    rows = Integration.objects.filter(organization=cast["admin"].org, provider="sendgrid")
    assert rows.count() == 1
    assert rows[0].extra == {"from_email": "b@acme.test"}
    assert decrypt_token(rows[0].token_encrypted) == "SG.second.key-value-1234"


def test_google_calendar_defaults_calendar_id_to_primary(cast, client_for):
    response = connect(client_for(cast["admin"]), "google_calendar")

    assert response.json()["integration"]["extra"] == {"calendar_id": "primary"}


def test_list_shows_own_integrations_without_any_token_material(cast, client_for):
    admin = client_for(cast["admin"])
    for provider in PROVIDERS:
        connect(admin, provider)
    connect(
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
    connect(client, "telegram")

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
        connect(client, "instagram")
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
    connect(admin, "telegram")
    admin.delete("/api/integrations/telegram/")
    connect(
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
    connect(client_for(cast["admin"]), "telegram")
    connect(
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
    ("sendgrid", {}, "extra.from_email"),
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
    response = connect(client_for(cast["admin"]), provider, extra=extra)

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
            "to_whatsapp": "whatsapp:+15551234567",
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
    response = connect(client_for(cast["admin"]), provider, extra=extra)
    assert response.status_code == 200, response.content


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
    body = assert_error_envelope(connect(client_for(cast["admin"]), "sendgrid", extra=extra), 400)
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
    response = connect(client_for(cast["admin"]), provider, token=token)
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
    body = assert_error_envelope(connect(client_for(cast["admin"]), "telegram", extra=extra), 400)
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
