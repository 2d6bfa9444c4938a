"""GET /health/: database, migrations (and later broker and workers) in one JSON answer."""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _database() -> tuple[str, list[str]]:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # any failure here means "unreachable" to ops
        return f"error: {type(exc).__name__}", []
    return "ok", [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


def health_checks() -> tuple[bool, dict[str, Any]]:
    """(healthy, body) for the health endpoint."""
    database, pending = _database()
    body: dict[str, Any] = {"database": database, "pending_migrations": pending}
    failing = [name for name, value in body.items() if value not in ("ok", [])]
    body = {"status": "ok" if not failing else "error", **body}
    if failing:
        body["failing"] = failing
    return not failing, body


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    healthy, body = health_checks()
    return JsonResponse(body, status=200 if healthy else 503)
