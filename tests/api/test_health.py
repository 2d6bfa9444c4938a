"""GET /health/ reports the database and pending migrations."""

from __future__ import annotations

import pytest
from django.db.migrations.recorder import MigrationRecorder

from api.metrics import store

pytestmark = pytest.mark.django_db


def test_health_is_ok_without_auth_when_a_worker_answered(client):
    store().worker_heartbeat("celery@test-host")
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok", body
    assert body["database"] == "ok" and body["pending_migrations"] == []
    assert body["broker"] == "ok" and body["workers"] == "ok"


def test_health_is_degraded_not_down_without_workers(client):
    store()._redis.delete(store()._prefix + "workers")
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["failing"] == ["workers"]


def test_health_is_503_naming_a_pending_migration(client):
    latest = MigrationRecorder.Migration.objects.filter(app="shared").latest("id")
    latest.delete()

    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert f"shared.{latest.name}" in body["pending_migrations"]
    assert "pending_migrations" in body["failing"]
