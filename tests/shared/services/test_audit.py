"""shared.services.audit: one row and one `corbi.audit` JSON line per event, actor only if real."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.contrib.auth.models import AnonymousUser

from corbi.audit import AuditFormatter
from shared.models import AuditEvent
from shared.services.audit import audit_event_record
from tests.factories import make_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def audit_lines():
    """What the corbi.audit logger prints through the production formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AuditFormatter())
    logger = logging.getLogger("corbi.audit")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.setLevel(previous)
    logger.removeHandler(handler)


def test_an_event_is_stored_and_logged_as_one_json_record(audit_lines):
    alice = make_member("acme", "alice", "admin")

    event = audit_event_record(
        organization=alice.org,
        actor=alice.user,
        action="integration.connected",
        provider="telegram",
        token_fingerprint="sha256:0123456789ab",
        data={"created": True},
    )

    stored = AuditEvent.objects.get()
    assert stored.pk == event.pk
    assert (stored.action, stored.provider, stored.actor) == (
        "integration.connected",
        "telegram",
        alice.user,
    )
    assert stored.data == {"created": True}
    [line] = [r for r in audit_lines() if r.get("id") == event.pk]
    assert line["event"] == "integration.connected"
    assert (line["org_id"], line["org"], line["user"]) == (alice.org.pk, "acme", "alice")
    assert line["token_fingerprint"] == "sha256:0123456789ab"
    assert line["created"] is True


def test_an_anonymous_actor_is_stored_as_none(audit_lines):
    org = make_member("acme", "alice", "admin").org
    event = audit_event_record(organization=org, actor=AnonymousUser(), action="message.failed")
    assert event.actor is None
    assert AuditEvent.objects.get().data == {}
