"""Every /api/ error carries a stable `code`: one case per code, the docs table and the schema."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

import api.views
from api.errors import envelope, json_bad_request, json_forbidden, json_server_error
from api.exceptions import ErrorCode
from shared import errors as service_errors
from shared.services.connection_slots import ConnectionTestBusy
from tests.factories import api_client, assert_no_canary, connect

pytestmark = pytest.mark.django_db

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
TELEGRAM = {"provider": "telegram", "to": "4242", "body": "Your table is ready."}
WHATSAPP = {"provider": "whatsapp", "to": "+14155550123", "body": "Your table is ready."}
ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"


@pytest.fixture
def acme(cast):
    """The cast with Telegram connected for acme."""
    connect(cast["admin"], "telegram")
    return cast


def answering(member=None, org_id=None, auth=None, **kwargs) -> APIClient:
    """A client that answers 500 instead of raising; credentials as given."""
    return api_client(member, org_id, auth, raise_request_exception=False, **kwargs)


def post_json(api: APIClient, path: str, raw: str, **extra):
    return api.post(path, data=raw, content_type="application/json", **extra)


def patch_view(name: str, exc: Exception):
    """A setup step: api.views.<name> raises `exc`."""

    def setup(monkeypatch, settings) -> None:
        def fail(**kwargs):
            raise exc

        monkeypatch.setattr(api.views, name, fail)

    return setup


def drop_key(monkeypatch, settings) -> None:
    """A setup step: only a key that decrypts no stored token is configured."""
    settings.FERNET_KEYS = [Fernet.generate_key().decode()]


def small_uploads(monkeypatch, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100


def session_without_csrf(member) -> APIClient:
    made = APIClient(enforce_csrf_checks=True, raise_request_exception=False)
    made.force_login(member.user)
    return made


def admin(cast) -> APIClient:
    return answering(cast["admin"])


def reuse_a_key(api: APIClient) -> object:
    """The same idempotency key again with another body."""
    api.post("/api/messages/", {**TELEGRAM, "idempotency_key": "k-1"}, format="json")
    return api.post(
        "/api/messages/", {**TELEGRAM, "body": "Changed.", "idempotency_key": "k-1"}, format="json"
    )


def cancel_twice(api: APIClient) -> object:
    """Cancel a queued message, then again: the second finds it final."""
    created = api.post("/api/messages/", TELEGRAM, format="json").json()
    api.post(f"/api/messages/{created['message_id']}/cancel/")
    return api.post(f"/api/messages/{created['message_id']}/cancel/")


def strict_webhook_targets(monkeypatch, settings) -> None:
    """A setup step: production SSRF rules (no private webhook targets)."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False


def one_webhook_endpoint(monkeypatch, settings) -> None:
    settings.WEBHOOK_MAX_ENDPOINTS = 0


def redeliver_to_disabled_endpoint(cast) -> object:
    from django.utils import timezone

    from shared.crypto import encrypt_token
    from shared.events.models import Event, EventDelivery, WebhookEndpoint

    org = cast["admin"].org
    endpoint = WebhookEndpoint.objects.create(
        organization=org,
        url="http://127.0.0.1:9/hook",
        secret_encrypted=encrypt_token("whsec_" + "A" * 44),
        disabled_at=timezone.now(),
        disabled_reason="The endpoint answered 410 Gone.",
    )
    event = Event.objects.create(organization=org, type="message.sent", created_at=timezone.now())
    delivery = EventDelivery.objects.create(event=event, endpoint=endpoint, status="failed")
    path = f"/api/webhook-endpoints/{endpoint.pk}/deliveries/{delivery.pk}/redeliver/"
    return admin(cast).post(path)


# case id: (code, status, request(cast) -> response, optional setup(monkeypatch, settings)).
def oauth_ready(monkeypatch, settings) -> None:
    """A setup step: "Connect with Google" configured; its endpoints on a closed port."""
    settings.GOOGLE_OAUTH_CLIENT_ID = "cid.apps.googleusercontent.com"
    settings.GOOGLE_OAUTH_CLIENT_SECRET = "GOCSPX-test-only"
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.OAUTH_SETTINGS_URL = ""
    for name in ("GOOGLE_OAUTH_AUTH_URI", "GOOGLE_TOKEN_URI", "GOOGLE_REVOKE_URI"):
        setattr(settings, name, "http://127.0.0.1:9/" + name.lower())


def token_endpoint(status: int, body: dict):
    """A setup step: Google's token endpoint is a loopback stub answering `status` + `body`."""

    def setup(monkeypatch, settings) -> None:
        class Stub(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                return

        server = HTTPServer(("127.0.0.1", 0), Stub)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        settings.GOOGLE_TOKEN_URI = f"http://127.0.0.1:{server.server_port}/token"

    return setup


def oauth_callback(params: dict, *, cookie: bool = True, before=None, times: int = 1):
    """Start "Connect with Google" as acme's admin, then call the callback with its state."""

    def request(cast):
        client = admin(cast)
        started = client.post("/api/integrations/google_calendar/oauth/start/", {}, format="json")
        url = started.json()["authorization_url"]
        state = parse_qs(urlsplit(url).query)["state"][0]
        if not cookie:
            client.cookies.clear()
        if before is not None:
            before()
        for _ in range(times):
            response = client.get("/oauth/google/callback/", {"state": state, **params})
        return response

    return request


def _expire_states() -> None:
    from shared.models import OAuthState

    OAuthState.objects.update(expires_at=timezone.now() - timedelta(seconds=1))


GOOD_TOKENS = {"access_token": "ya29.x" + "y" * 30, "expires_in": 3599, "token_type": "Bearer"}
CALENDAR = "https://www.googleapis.com/auth/calendar"

CASES = {
    "validation_failed:serializer": (
        "validation_failed",
        400,
        lambda c: admin(c).post("/api/messages/", {"provider": "telegram"}, format="json"),
    ),
    "validation_failed:service": (
        "validation_failed",
        400,
        lambda c: admin(c).post("/api/messages/", {**TELEGRAM, "to": "chat 42"}, format="json"),
    ),
    "validation_failed:query": (
        "validation_failed",
        400,
        lambda c: admin(c).get("/api/messages/?status=lost"),
    ),
    "validation_failed:parser": (
        "validation_failed",
        400,
        lambda c: post_json(admin(c), "/api/messages/", '{"to": "\\u0000"}'),
    ),
    "parse_error": ("parse_error", 400, lambda c: post_json(admin(c), "/api/messages/", "{")),
    "json_too_deep": (
        "json_too_deep",
        400,
        lambda c: post_json(admin(c), "/api/messages/", "[" * 1000),
    ),
    "org_header_missing": (
        "org_header_missing",
        400,
        lambda c: APIClient().get(
            "/api/integrations/", HTTP_AUTHORIZATION=f"Token {c['admin'].token}"
        ),
    ),
    "org_header_invalid": (
        "org_header_invalid",
        400,
        lambda c: answering(c["admin"], org_id="acme").get("/api/integrations/"),
    ),
    "bad_request:host": (
        "bad_request",
        400,
        lambda c: admin(c).get("/api/integrations/", HTTP_HOST="evil.invalid"),
    ),
    "not_authenticated": (
        "not_authenticated",
        401,
        lambda c: answering().get("/api/integrations/"),
    ),
    "auth_scheme_unsupported": (
        "auth_scheme_unsupported",
        401,
        lambda c: answering(c["admin"], auth=f"Bearer {c['admin'].token}").get(
            "/api/integrations/"
        ),
    ),
    "authentication_failed": (
        "authentication_failed",
        401,
        lambda c: answering(c["admin"], auth="Token not-a-key").get("/api/integrations/"),
    ),
    "admin_required": (
        "admin_required",
        403,
        lambda c: answering(c["member"]).delete("/api/integrations/telegram/"),
    ),
    "permission_denied:csrf": (
        "permission_denied",
        403,
        lambda c: session_without_csrf(c["admin"]).post(
            "/api/messages/", TELEGRAM, format="json", HTTP_X_ORG_ID=str(c["admin"].org.pk)
        ),
    ),
    "not_found:service": (
        "not_found",
        404,
        lambda c: admin(c).get("/api/messages/999999/"),
    ),
    "not_found:provider": ("not_found", 404, lambda c: admin(c).get("/api/integrations/fax/")),
    "org_not_found": (
        "org_not_found",
        404,
        lambda c: answering(c["outsider"], org_id=c["admin"].org.pk).get("/api/integrations/"),
    ),
    "endpoint_not_found": (
        "endpoint_not_found",
        404,
        lambda c: admin(c).get("/api/nothing-here/"),
    ),
    "endpoint_not_found:slash": (
        "endpoint_not_found",
        404,
        lambda c: admin(c).post("/api/messages", TELEGRAM, format="json"),
    ),
    "method_not_allowed": (
        "method_not_allowed",
        405,
        lambda c: admin(c).patch("/api/messages/", TELEGRAM, format="json"),
    ),
    "not_acceptable": (
        "not_acceptable",
        406,
        lambda c: admin(c).get("/api/integrations/", HTTP_ACCEPT="text/html"),
    ),
    "conflict": (
        "conflict",
        409,
        lambda c: admin(c).post("/api/messages/", WHATSAPP, format="json"),
    ),
    "idempotency_key_reused": (
        "idempotency_key_reused",
        409,
        lambda c: reuse_a_key(admin(c)),
    ),
    "message_not_cancellable": (
        "message_not_cancellable",
        409,
        lambda c: cancel_twice(admin(c)),
    ),
    "body_too_large": (
        "body_too_large",
        413,
        lambda c: post_json(
            admin(c), "/api/messages/", json.dumps({**TELEGRAM, "body": "x" * 200})
        ),
        small_uploads,
    ),
    "unsupported_media_type": (
        "unsupported_media_type",
        415,
        lambda c: admin(c).post(
            "/api/messages/", data="provider=telegram", content_type="text/plain"
        ),
    ),
    "test_connection_busy": (
        "test_connection_busy",
        429,
        lambda c: admin(c).post("/api/integrations/telegram/test/", {}, format="json"),
        patch_view("integration_test", ConnectionTestBusy("Too many tests.", retry_after=3)),
    ),
    "server_error": (
        "server_error",
        500,
        lambda c: admin(c).get("/api/integrations/telegram/"),
        patch_view("integration_get", RuntimeError("boom")),
    ),
    "unavailable": (
        "unavailable",
        503,
        lambda c: admin(c).get("/api/integrations/telegram/"),
        patch_view("integration_get", service_errors.Unavailable("Try again later.")),
    ),
    "token_undecryptable": (
        "token_undecryptable",
        503,
        lambda c: admin(c).post("/api/messages/", TELEGRAM, format="json"),
        drop_key,
    ),
    "webhook_signature_invalid": (
        "webhook_signature_invalid",
        403,
        lambda c: APIClient().post(
            "/webhooks/instagram/", data=b"{}", content_type="application/json"
        ),
    ),
    "webhook_malformed": (
        "webhook_malformed",
        400,
        lambda c: APIClient().get(
            "/webhooks/instagram/",
            {"hub.mode": "subscribe", "hub.verify_token": "vt-1", "hub.challenge": "<x>"},
        ),
        lambda monkeypatch, settings: setattr(settings, "META_WEBHOOK_VERIFY_TOKEN", "vt-1"),
    ),
    "url_not_allowed": (
        "url_not_allowed",
        400,
        lambda c: admin(c).post(
            "/api/webhook-endpoints/", {"url": "http://169.254.169.254/"}, format="json"
        ),
        strict_webhook_targets,
    ),
    "oauth_not_supported": (
        "oauth_not_supported",
        400,
        lambda c: admin(c).post("/api/integrations/telegram/oauth/start/", {}, format="json"),
        oauth_ready,
    ),
    "oauth_not_configured": (
        "oauth_not_configured",
        503,
        lambda c: admin(c).post(
            "/api/integrations/google_calendar/oauth/start/", {}, format="json"
        ),
    ),
    "state_invalid": (
        "state_invalid",
        400,
        lambda c: APIClient().get("/oauth/google/callback/", {"state": "nope", "code": "x"}),
    ),
    "state_mismatch": (
        "state_mismatch",
        400,
        oauth_callback({"code": "x"}, cookie=False),
        oauth_ready,
    ),
    "state_used": (
        "state_used",
        400,
        oauth_callback({"error": "access_denied"}, times=2),
        oauth_ready,
    ),
    "state_expired": (
        "state_expired",
        400,
        oauth_callback({"code": "x"}, before=_expire_states),
        oauth_ready,
    ),
    "consent_denied": (
        "consent_denied",
        400,
        oauth_callback({"error": "access_denied"}),
        oauth_ready,
    ),
    "code_missing": ("code_missing", 400, oauth_callback({}), oauth_ready),
    "oauth_failed": ("oauth_failed", 400, oauth_callback({"error": "server_error"}), oauth_ready),
    "provider_unavailable": (
        "provider_unavailable",
        400,
        oauth_callback({"code": "x"}),
        oauth_ready,
    ),
    "code_rejected": (
        "code_rejected",
        400,
        oauth_callback({"code": "x"}),
        oauth_ready,
        token_endpoint(400, {"error": "invalid_grant", "error_description": "Bad Request"}),
    ),
    "scope_not_granted": (
        "scope_not_granted",
        400,
        oauth_callback({"code": "x"}),
        oauth_ready,
        token_endpoint(200, {**GOOD_TOKENS, "refresh_token": "1//" + "r" * 30, "scope": "openid"}),
    ),
    "no_refresh_token": (
        "no_refresh_token",
        400,
        oauth_callback({"code": "x"}),
        oauth_ready,
        token_endpoint(200, {**GOOD_TOKENS, "scope": CALENDAR}),
    ),
    "webhook_endpoint_disabled": ("webhook_endpoint_disabled", 409, redeliver_to_disabled_endpoint),
    "webhook_endpoint_limit": (
        "webhook_endpoint_limit",
        409,
        lambda c: admin(c).post(
            "/api/webhook-endpoints/", {"url": "http://127.0.0.1:9/hook"}, format="json"
        ),
        one_webhook_endpoint,
    ),
}


@pytest.mark.parametrize("case", CASES.keys())
def test_each_error_carries_its_code(acme, monkeypatch, settings, case):
    code, status, request, *setup = CASES[case]
    for step in setup:
        step(monkeypatch, settings)

    response = request(acme)

    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert_no_canary(response.content.decode())
    body = response.json()
    assert body["status"] == "error" and body["ok"] is False and body["message"]
    assert body["code"] == code
    assert set(body) <= {"status", "ok", "code", "message", "errors", "retry_after"}


def test_every_code_has_a_case():
    assert {code for code, *_ in CASES.values()} == set(ErrorCode.values)


def test_the_django_handlers_carry_codes():
    request = RequestFactory().get("/api/anything/")
    for handler, status, code in (
        (json_bad_request, 400, "bad_request"),
        (json_forbidden, 403, "permission_denied"),
        (json_server_error, 500, "server_error"),
    ):
        response = handler(request)
        assert response.status_code == status
        assert json.loads(response.content)["code"] == code


def test_every_service_error_code_is_an_api_code():
    kinds = [service_errors.ServiceError, ConnectionTestBusy]
    kinds += [
        value
        for value in vars(service_errors).values()
        if isinstance(value, type) and issubclass(value, service_errors.ServiceError)
    ]
    assert {kind.code for kind in kinds} <= set(ErrorCode.values)


def test_the_envelope_puts_the_code_next_to_the_message():
    assert envelope("Nope.", {"to": ["Bad."]}, code=ErrorCode.CONFLICT) == {
        "status": "error",
        "ok": False,
        "code": "conflict",
        "message": "Nope.",
        "errors": {"to": ["Bad."]},
    }


def test_docs_list_every_code_once_with_the_status_it_is_sent_with():
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", DOCS.read_text(), flags=re.MULTILINE)
    documented = dict(rows)
    assert len(rows) == len(documented), "a code is documented twice"
    assert set(documented) == set(ErrorCode.values)
    for code, status, *_ in CASES.values():
        assert documented[code] == str(status), code


def test_every_error_response_in_the_schema_is_the_envelope_with_a_code(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    error_envelope = components["ErrorEnvelope"]
    assert {"status", "ok", "code", "message"} <= set(error_envelope["required"])
    code_ref = error_envelope["properties"]["code"]["allOf"][0]["$ref"]
    assert code_ref == "#/components/schemas/ErrorCodeEnum"
    assert sorted(components["ErrorCodeEnum"]["enum"]) == sorted(ErrorCode.values)
    checked = 0
    for item in schema["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                where = f"{operation['operationId']} {status}"
                content = response.get("content")
                assert content, f"{where} declares no body"
                assert content["application/json"]["schema"] == {"$ref": ENVELOPE_REF}, where
                checked += 1
    assert checked >= 60
