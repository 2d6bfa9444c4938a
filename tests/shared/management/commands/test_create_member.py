"""manage.py create_member: prints the JSON contract and is idempotent."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from shared.models import Membership

pytestmark = pytest.mark.django_db


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
