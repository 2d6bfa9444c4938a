"""/api/docs/ works offline: Swagger UI comes from the app's own static files, not a CDN."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
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
