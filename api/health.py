"""GET /health/: database, migrations, broker, workers and stored tokens in one JSON answer."""

from __future__ import annotations

from typing import Any

from django.conf import settings
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


def _broker() -> str:
    from corbi.celery import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # kombu raises transport-specific errors
        return f"error: {type(exc).__name__}"
    return "ok"


def _workers() -> str:
    from api.metrics import store

    try:
        seen = store().workers_seen_within(settings.WORKER_HEARTBEAT_WINDOW_SECONDS)
    except Exception as exc:  # the metrics store is Redis; unreachable means unknown
        return f"error: {type(exc).__name__}"
    return "ok" if seen else "error: no worker answered recently"


def _tokens() -> str:
    """Whether a connected integration's token was found not to decrypt (a dropped FERNET_KEY)."""
    from shared.models import Integration

    try:
        broken = Integration.objects.filter(is_active=True, key_unavailable_at__isnull=False)
        count = broken.count()
    except Exception as exc:  # the database check reports why
        return f"error: {type(exc).__name__}"
    if count:
        return (
            f"error: {count} integration token(s) do not decrypt with any FERNET_KEY; "
            "restore the FERNET_KEY that encrypted them (their deliveries wait until then)"
        )
    return "ok"


def health_checks() -> tuple[bool, dict[str, Any]]:
    """(healthy, body) for the health endpoint."""
    database, pending = _database()
    body: dict[str, Any] = {
        "database": database,
        "pending_migrations": pending,
        "broker": _broker(),
        "workers": _workers(),
        "tokens": _tokens(),
    }
    failing = [name for name, value in body.items() if value not in ("ok", [])]
    # The web cannot serve without its database; without a broker or workers it still accepts
    # work into the outbox, so those make the service "degraded", not unavailable.
    fatal = [name for name in failing if name in ("database", "pending_migrations")]
    state = "error" if fatal else ("degraded" if failing else "ok")
    body = {"status": state, **body}
    if failing:
        body["failing"] = failing
    return not fatal, body


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    healthy, body = health_checks()
    return JsonResponse(body, status=200 if healthy else 503)
