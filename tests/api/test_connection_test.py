"""Test Connection (POST /api/integrations/{provider}/test/) against the provider sandbox."""

from __future__ import annotations

import json
import logging
import time

import pytest

from shared.models import AuditEvent, Integration, Provider
from tests.factories import CANARY, SANDBOX_ACCOUNTS, VALID_EXTRA, assert_no_canary

pytestmark = pytest.mark.django_db

PROVIDERS = list(Provider.values)
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
    "whatsapp": {"to_whatsapp": "+15551234567"},
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


@pytest.fixture(autouse=True)
def providers_use_the_sandbox(settings, sandbox):
    """Every provider base URL points at the sandbox; the test budget is short."""
    settings.TWILIO_API_BASE = sandbox.url
    settings.SENDGRID_API_BASE = sandbox.url
    settings.TELEGRAM_API_BASE = sandbox.url
    settings.GRAPH_API_BASE = sandbox.url + "/v23.0"
    settings.GOOGLE_CALENDAR_API_BASE = sandbox.url + "/calendar/v3/"
    settings.GOOGLE_TOKEN_URI = sandbox.url + "/token"
    settings.TEST_CONNECTION_TIMEOUT_SECONDS = BUDGET_SECONDS


@pytest.fixture
def admin(cast, client_for):
    return client_for(cast["admin"])


def register(sandbox_client, provider, **fields):
    return sandbox_client.add_account(provider, **{**SANDBOX_ACCOUNTS[provider], **fields})


def connect(client, provider, extra=None, token=None):
    body = {"token": token or CANARY[provider], "extra": {**VALID_EXTRA[provider], **(extra or {})}}
    response = client.post(f"/api/integrations/{provider}/connect/", body, format="json")
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


def assert_error_envelope(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "error" and body["ok"] is False and body["message"]
    return body


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
    connect(admin, provider)

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
    connect(admin, provider, extra=DESTINATIONS[provider])

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
    connect(admin, "telegram")

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
    connect(admin, "sendgrid", extra={"to_email": "stored@acme.test"})

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
    connect(admin, "google_calendar", token=token)

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
    connect(admin, provider)  # the sandbox has no account for this token

    body = assert_failed(run_test(admin, provider))

    assert REJECTED_SAYS[provider] in body["message"]
    assert body["integration"]["credentials_rejected"] is True
    assert body["checks"] == {}
    row = Integration.objects.get(organization=cast["admin"].org, provider=provider)
    assert row.credentials_rejected_at is not None and row.last_test_ok is False
    assert sends(sandbox_client, provider) == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_later_successful_test_clears_credentials_rejected(cast, admin, sandbox_client, provider):
    connect(admin, provider)
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
    connect(admin, "whatsapp")

    body = assert_failed(run_test(admin, "whatsapp"))

    assert "Twilio rejected the credentials" in body["message"]
    assert body["integration"]["credentials_rejected"] is True


def test_sendgrid_key_without_mail_send_scope_is_rejected(cast, admin, sandbox_client):
    register(sandbox_client, "sendgrid", scopes=["user.profile.read"])
    connect(admin, "sendgrid")

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
    connect(admin, provider, extra=destination)

    body = assert_failed(run_test(admin, provider))

    assert text in body["message"]
    assert PROBE_SAYS[provider] in body["checks"]["credentials"]
    assert "test_message" not in body["checks"]
    assert body["integration"]["credentials_rejected"] is False
    assert len(sends(sandbox_client, provider)) == 1


def test_unverified_sendgrid_sender_is_not_a_credentials_problem(cast, admin, sandbox_client):
    register(sandbox_client, "sendgrid", verified_senders=["someone-else@acme.test"])
    connect(admin, "sendgrid", extra=DESTINATIONS["sendgrid"])

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
    connect(admin, provider)
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
    connect(admin, provider, extra=DESTINATIONS[provider])
    sandbox_client.fault(provider, status=503, count=1, path=SEND_PATHS[provider])

    body = assert_failed(run_test(admin, provider))

    assert PROBE_SAYS[provider] in body["checks"]["credentials"]
    assert "test_message" not in body["checks"]
    assert body["integration"]["credentials_rejected"] is False
    assert [r["outcome"] for r in sends(sandbox_client, provider)] == ["fault:503"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_that_never_answers_fails_within_the_budget(cast, admin, sandbox_client, provider):
    register(sandbox_client, provider)
    connect(admin, provider)
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
    connect(admin, "telegram", extra=DESTINATIONS["telegram"])
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
    connect(admin, "google_calendar", token=token)
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
    connect(admin, "telegram")
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
    connect(admin, "telegram")
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
    connect(admin, "telegram")

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
    connect(admin, "telegram")
    assert admin.delete("/api/integrations/telegram/").status_code == 200

    body = assert_error_envelope(run_test(admin, "telegram"), 404)

    assert "telegram" in body["message"]
    assert sandbox_client.requests("telegram") == []
    assert audited_tests(cast["admin"].org) == []


def test_unknown_provider_is_404(cast, admin, sandbox_client):
    assert_error_envelope(run_test(admin, "fax"), 404)


def test_member_cannot_test_a_connection(cast, admin, client_for, sandbox_client):
    register(sandbox_client, "telegram")
    connect(admin, "telegram")

    assert_error_envelope(run_test(client_for(cast["member"]), "telegram"), 403)

    assert sandbox_client.requests("telegram") == []
    assert audited_tests(cast["admin"].org) == []


def test_admin_of_another_org_gets_404_for_this_orgs_integration(
    cast, admin, client_for, sandbox_client
):
    register(sandbox_client, "telegram")
    connect(admin, "telegram")
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
    connect(admin, "telegram")

    assert_error_envelope(run_test(client_for(cast["outsider"]), "telegram"), 404)

    assert sandbox_client.requests("telegram") == []


def test_anonymous_gets_401(cast, admin, client_for, sandbox_client):
    connect(admin, "telegram")
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
    connect(admin, provider)

    response = run_test(admin, provider, body)

    envelope = assert_error_envelope(response, 400)
    assert field in envelope["errors"]
    assert field in envelope["message"]
    assert sandbox_client.requests(provider) == []
    assert audited_tests(cast["admin"].org) == []


def test_malformed_json_is_400_in_the_envelope(cast, admin, sandbox_client):
    connect(admin, "telegram")
    response = admin.post(
        "/api/integrations/telegram/test/", data="{nope", content_type="application/json"
    )
    assert assert_error_envelope(response, 400)["message"] == "Malformed JSON in the request body."


def test_empty_extra_means_use_what_is_stored(cast, admin, sandbox_client):
    register(sandbox_client, "telegram")
    connect(admin, "telegram", extra={"chat_id": "4242"})

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
    connect(admin, provider, extra=extra)
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
