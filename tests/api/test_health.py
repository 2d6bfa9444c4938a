"""GET /health/ reports the database and pending migrations."""

from __future__ import annotations

import pytest
from django.db.migrations.recorder import MigrationRecorder

pytestmark = pytest.mark.django_db


def test_health_is_ok_without_auth(client):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["pending_migrations"] == []


def test_health_is_503_naming_a_pending_migration(client):
    MigrationRecorder.Migration.objects.filter(app="shared", name="0001_initial").delete()

    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert "shared.0001_initial" in body["pending_migrations"]
    assert "pending_migrations" in body["failing"]
