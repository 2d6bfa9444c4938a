"""OpenAPI schema, docs, create_member's JSON contract and the admin's token handling."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from shared.crypto import decrypt_token
from shared.models import Integration, Membership
from tests.factories import CANARY, assert_no_canary

pytestmark = pytest.mark.django_db


def test_schema_generates_without_warnings_and_documents_x_org_id():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    operations = [
        (path, method, op) for path, item in schema["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 5
    for path, method, op in operations:
        headers = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
        assert "X-Org-ID" in headers, f"{method.upper()} {path} does not document X-Org-ID"


def test_schema_and_docs_need_no_org_header(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


def test_create_member_prints_the_json_contract_and_is_idempotent():
    out = io.StringIO()
    call_command("create_member", org="demo", username="ada", role="admin", stdout=out)
    first = json.loads(out.getvalue())
    assert set(first) == {"org_id", "org", "username", "role", "token"}
    assert first["org"] == "demo" and first["username"] == "ada" and first["role"] == "admin"
    assert Token.objects.get(user__username="ada").key == first["token"]

    again = io.StringIO()
    call_command("create_member", org="demo", username="ada", role="member", stdout=again)
    second = json.loads(again.getvalue())
    assert second["org_id"] == first["org_id"] and second["token"] == first["token"]
    assert Membership.objects.get(user__username="ada").role == "member"


def test_admin_change_form_replaces_the_token_but_never_shows_it(cast, client_for, admin_client):
    client_for(cast["admin"]).post(
        "/api/integrations/telegram/connect/",
        {"token": CANARY["telegram"], "extra": {}},
        format="json",
    )
    row = Integration.objects.get()
    page = admin_client.get(f"/admin/shared/integration/{row.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "new_token" in html
    assert_no_canary(html)
    assert row.token_encrypted not in html

    response = admin_client.post(
        f"/admin/shared/integration/{row.pk}/change/",
        {
            "organization": row.organization_id,
            "provider": "telegram",
            "extra": "{}",
            "is_active": "on",
            "new_token": "555666777:replacedTokenAbcdefghijklmnopqrstuvw",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row.refresh_from_db()
    assert decrypt_token(row.token_encrypted) == "555666777:replacedTokenAbcdefghijklmnopqrstuvw"
