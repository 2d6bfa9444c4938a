"""Every /api/ endpoint x method x caller: other organizations see 404, anonymous 401, no effect."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.factories import CANARY, VALID_EXTRA, assert_no_canary
from tests.security.conftest import snapshot

pytestmark = pytest.mark.django_db

MESSAGE = {"provider": "telegram", "to": "4242", "body": "hello"}
BOOKING = {
    "summary": "Lunch",
    "start": "2030-01-01T12:00:00+00:00",
    "end": "2030-01-01T13:00:00+00:00",
}

# /api/ routes that are public by design (the OpenAPI schema and its docs page).
PUBLIC = {"api/schema/", "api/docs/"}


@dataclass(frozen=True)
class Row:
    route: str  # the URLconf pattern
    method: str
    path: str  # with {queued}, {failed}, {booking} placeholders for acme's objects
    body: dict | None = None
    admin: int = 200
    member: int = 200
    touches_provider: bool = False
    list_key: str | None = None  # where a list answer keeps its rows
    extra: dict = field(default_factory=dict)


MATRIX = [
    Row("api/integrations/", "get", "/api/integrations/", list_key=""),
    Row("api/integrations/<str:provider>/", "get", "/api/integrations/telegram/"),
    Row("api/integrations/<str:provider>/", "delete", "/api/integrations/telegram/", member=403),
    Row(
        "api/integrations/<str:provider>/connect/",
        "post",
        "/api/integrations/telegram/connect/",
        {"token": CANARY["telegram"], "extra": VALID_EXTRA["telegram"]},
        member=403,
    ),
    Row(
        "api/integrations/<str:provider>/test/",
        "post",
        "/api/integrations/telegram/test/",
        {},
        member=403,
        touches_provider=True,
    ),
    # "Connect with Google": starting the flow is an admin's write (it binds a state row).
    Row(
        "api/integrations/<str:provider>/oauth/start/",
        "post",
        "/api/integrations/google_calendar/oauth/start/",
        {"calendar_id": "primary"},
        member=403,
    ),
    Row("api/audit/", "get", "/api/audit/", member=403, list_key="results"),
    Row("api/messages/", "get", "/api/messages/", list_key="results"),
    Row("api/messages/", "post", "/api/messages/", MESSAGE, admin=202, member=202),
    Row(
        "api/messages/bulk/",
        "post",
        "/api/messages/bulk/",
        {"messages": [MESSAGE, MESSAGE]},
        admin=202,
        member=202,
    ),
    Row("api/messages/<int:message_id>/", "get", "/api/messages/{queued}/"),
    Row(
        "api/messages/<int:message_id>/retry/",
        "post",
        "/api/messages/{failed}/retry/",
        admin=202,
        member=403,
    ),
    # Cancelling takes the role that sends: members too.
    Row(
        "api/messages/<int:message_id>/cancel/",
        "post",
        "/api/messages/{queued}/cancel/",
        admin=200,
        member=200,
    ),
    Row("api/calendar/bookings/<str:booking_id>/", "get", "/api/calendar/bookings/{booking}/"),
    Row(
        "api/calendar/bookings/<str:booking_id>/",
        "put",
        "/api/calendar/bookings/{booking}/",
        BOOKING,
        admin=202,
        member=202,
    ),
    Row(
        "api/calendar/bookings/<str:booking_id>/",
        "delete",
        "/api/calendar/bookings/{booking}/",
        admin=202,
        member=202,
    ),
    # Suppressions: members read, admins write.
    Row("api/suppressions/", "get", "/api/suppressions/", list_key="results"),
    Row(
        "api/suppressions/",
        "post",
        "/api/suppressions/",
        {"provider": "telegram", "recipient": "5151"},
        admin=201,
        member=403,
    ),
    Row(
        "api/suppressions/<int:suppression_id>/",
        "delete",
        "/api/suppressions/{suppression}/",
        member=403,
    ),
    # Webhook endpoints: admins only, reads included (they show where events go).
    Row("api/webhook-endpoints/", "get", "/api/webhook-endpoints/", member=403, list_key=""),
    Row(
        "api/webhook-endpoints/",
        "post",
        "/api/webhook-endpoints/",
        {"url": "http://127.0.0.1:9/new"},
        admin=201,
        member=403,
    ),
    Row(
        "api/webhook-endpoints/<int:endpoint_id>/",
        "get",
        "/api/webhook-endpoints/{endpoint}/",
        member=403,
    ),
    Row(
        "api/webhook-endpoints/<int:endpoint_id>/",
        "delete",
        "/api/webhook-endpoints/{endpoint}/",
        member=403,
    ),
    Row(
        "api/webhook-endpoints/<int:endpoint_id>/rotate-secret/",
        "post",
        "/api/webhook-endpoints/{endpoint}/rotate-secret/",
        member=403,
    ),
    Row(
        "api/webhook-endpoints/<int:endpoint_id>/deliveries/",
        "get",
        "/api/webhook-endpoints/{endpoint}/deliveries/",
        member=403,
        list_key="results",
    ),
    Row(
        "api/webhook-endpoints/<int:endpoint_id>/deliveries/<int:delivery_id>/redeliver/",
        "post",
        "/api/webhook-endpoints/{endpoint}/deliveries/{delivery}/redeliver/",
        admin=202,
        member=403,
    ),
]

# Methods no view implements still go through authentication and the org check first.
OTHER_METHODS = ["get", "post", "put", "patch", "delete", "options", "head"]

ROLES = ["admin", "member", "outsider_with_acme_header", "outsider_with_own_header", "anonymous"]


def api_routes() -> dict[str, set[str]]:
    """{pattern: implemented methods} for every route under /api/ in the URLconf."""
    found: dict[str, set[str]] = {}

    def walk(patterns, prefix=""):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                route = prefix + str(entry.pattern)
                view = getattr(entry.callback, "view_class", None) or getattr(
                    entry.callback, "cls", None
                )
                methods = {
                    m
                    for m in ("get", "post", "put", "patch", "delete")
                    if view is not None and hasattr(view, m)
                }
                found[route] = methods

    walk(get_resolver().url_patterns)
    return {route: methods for route, methods in found.items() if route.startswith("api/")}


def fill(row: Row, world: dict) -> str:
    return fill_path(row.path, world)


def fill_path(path: str, world: dict) -> str:
    acme = world["acme"]
    return path.format(
        queued=acme["queued"].pk,
        failed=acme["failed"].pk,
        booking=acme["booking"].booking_id,
        endpoint=acme["endpoint"].pk,
        delivery=acme["delivery"].pk,
        suppression=acme["suppression"].pk,
    )


def call(client, method: str, path: str, body=None):
    kwargs = {"format": "json"} if body is not None else {}
    if body is not None:
        kwargs["data"] = body
    return getattr(client, method)(path, **kwargs)


def client_for_role(role, world, client_for):
    acme_id = world["acme"]["org"].pk
    if role == "admin":
        return client_for(world["admin"])
    if role == "member":
        return client_for(world["member"])
    if role == "outsider_with_acme_header":
        return client_for(world["outsider"], org_id=acme_id)
    if role == "outsider_with_own_header":
        return client_for(world["outsider"])
    return client_for(None, org_id=acme_id)


def test_every_api_route_and_method_has_a_matrix_row():
    covered: dict[str, set[str]] = {}
    for row in MATRIX:
        covered.setdefault(row.route, set()).add(row.method)
    routes = api_routes()
    missing = {
        route: sorted(methods - covered.get(route, set()))
        for route, methods in routes.items()
        if route not in PUBLIC and methods - covered.get(route, set())
    }
    assert not missing, f"API routes without an isolation-matrix row: {missing}"
    stale = sorted(set(covered) - set(routes))
    assert not stale, f"matrix rows for routes that no longer exist: {stale}"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("row", MATRIX, ids=lambda r: f"{r.method.upper()} {r.path}")
def test_isolation_matrix(row, role, world, client_for, sandbox_client):
    client = client_for_role(role, world, client_for)
    path = fill(row, world)
    acme = world["acme"]["org"]
    before_all = snapshot()
    before_acme = snapshot(acme)
    sandbox_client.clear_requests()

    response = call(client, row.method, path, row.body)

    assert_no_canary(response.content.decode(errors="replace"))
    assert_no_canary(str(dict(response.items())))
    if role in ("admin", "member"):
        expected = getattr(row, role)
        assert response.status_code == expected, response.content
        if row.touches_provider and expected == 200:
            assert sandbox_client.requests(), "the sandbox saw no probe: wiring is broken"
        if expected == 403:
            assert snapshot() == before_all
            assert not sandbox_client.requests()
        if row.list_key is not None and expected == 200:
            body = response.json()
            items = body if row.list_key == "" else body[row.list_key]
            assert items, "the list shows nothing, so the isolation check would be vacuous"
            if "id" in items[0] and row.path == "/api/messages/":
                mine = set(
                    world["acme"]["org"].messages.values_list("pk", flat=True)
                )  # every listed row is acme's
                assert {item["id"] for item in items} <= mine
        return

    if role == "anonymous":
        assert response.status_code == 401, response.content
        assert snapshot() == before_all
    elif role == "outsider_with_acme_header":
        assert response.status_code == 404, response.content
        assert snapshot() == before_all
    else:  # the outsider in its own org, naming acme's objects
        assert snapshot(acme) == before_acme
        if "{" in row.path:
            if row.method == "put":
                # Booking ids are per organization: this creates globex's own booking.
                assert response.status_code in (202, 404), response.content
            else:
                assert response.status_code == 404, response.content
        elif row.list_key is not None and response.status_code == 200:
            body = response.json()
            items = body if row.list_key == "" else body[row.list_key]
            assert "Dinner acme" not in response.content.decode()
            if row.path == "/api/integrations/":
                assert len(items) == world["globex"]["org"].integrations.count()
            if row.path == "/api/messages/":
                theirs = set(world["globex"]["org"].messages.values_list("pk", flat=True))
                assert {item["id"] for item in items} <= theirs
            if row.path == "/api/audit/":
                ids = set(world["globex"]["org"].audit_events.values_list("pk", flat=True))
                assert {item["id"] for item in items} <= ids
            if row.path == "/api/webhook-endpoints/":
                assert [item["id"] for item in items] == [world["globex"]["endpoint"].pk]
            if row.path == "/api/suppressions/":
                assert [item["id"] for item in items] == [world["globex"]["suppression"].pk]
        return
    assert not sandbox_client.requests(), "a cross-org or anonymous call reached a provider"


@pytest.mark.parametrize("route", sorted({row.path for row in MATRIX}))
def test_any_method_from_another_org_is_404_and_anonymous_is_401(
    route, world, client_for, sandbox_client
):
    path = fill_path(route, world)
    before = snapshot()
    outsider = client_for(world["outsider"], org_id=world["acme"]["org"].pk)
    anonymous = client_for(None, org_id=world["acme"]["org"].pk)
    for method in OTHER_METHODS:
        assert call(outsider, method, path, {}).status_code == 404, method
        assert call(anonymous, method, path, {}).status_code == 401, method
        assert call(client_for(None), method, path, {}).status_code == 401, method
    assert snapshot() == before
    assert not sandbox_client.requests()


def test_lists_never_show_the_other_orgs_rows(world, client_for):
    acme, globex = world["acme"], world["globex"]
    admin = client_for(world["admin"])
    messages = admin.get("/api/messages/").json()["results"]
    assert {m["id"] for m in messages} == {acme["queued"].pk, acme["failed"].pk}
    audit = admin.get("/api/audit/").json()["results"]
    assert {a["id"] for a in audit} == set(acme["org"].audit_events.values_list("pk", flat=True))
    assert globex["org"].audit_events.exists()
    integrations = admin.get("/api/integrations/").json()
    assert len(integrations) == 5
    assert "globex" not in str(messages) + str(audit)
