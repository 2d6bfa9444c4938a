"""The OpenAPI schema documents X-Org-ID; /api/docs/ works offline from the app's own static files."""

from __future__ import annotations

import io
import re
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import call_command

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
ABSOLUTE = re.compile(r"""(?:https?:)?//[a-z0-9.-]+""", re.IGNORECASE)


@pytest.fixture
def docs_html(client, settings, tmp_path) -> str:
    """The docs page as `make run` serves it: collectstatic, then WhiteNoise in the app."""
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", "--noinput", "--verbosity", "0")
    response = client.get("/api/docs/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_docs_page_references_no_external_host(docs_html):
    assets = ASSET.findall(docs_html)
    assert len(assets) >= 3, assets
    assert [a for a in assets if urlsplit(a).netloc] == []
    assert ABSOLUTE.findall(docs_html) == []


def test_every_asset_of_the_docs_page_is_served_by_the_app(docs_html, client):
    for asset in ASSET.findall(docs_html):
        response = client.get(asset)
        assert response.status_code == 200, asset
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(body) > 0, asset


@pytest.mark.django_db
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


@pytest.mark.django_db
def test_schema_and_docs_need_no_org_header(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
