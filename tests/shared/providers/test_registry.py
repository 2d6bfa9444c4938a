"""shared.providers.registry: the five slugs and build_adapter's refusals."""

from __future__ import annotations

import pytest

from shared.providers import PROVIDERS, SLUGS, ProviderError, build_adapter


def test_registry_lists_the_five_slugs_in_order():
    assert SLUGS == ("whatsapp", "sendgrid", "telegram", "instagram", "google_calendar")
    assert all(PROVIDERS[slug].slug == slug for slug in SLUGS)
    assert all(PROVIDERS[slug].spec.label for slug in SLUGS)


def test_build_adapter_rejects_an_unknown_slug():
    with pytest.raises(KeyError, match="unknown provider"):
        build_adapter("fax", token="x", extra={}, base_url="http://127.0.0.1:9", timeout=1)


@pytest.mark.parametrize(
    ("slug", "token", "extra"),
    [
        ("whatsapp", "secret-token", {"account_sid": "AC123", "from_whatsapp": "+14155238886"}),
        ("telegram", "not-a-bot-token", {}),
        ("instagram", "IGAAtoken", {}),
        ("google_calendar", '{"refresh_token": "1//r"}', {}),
        ("sendgrid", "", {"from_email": "a@b.test"}),
    ],
)
def test_malformed_credentials_are_rejected_when_building(slug, token, extra):
    with pytest.raises(ProviderError) as caught:
        build_adapter(slug, token=token, extra=extra, base_url="http://127.0.0.1:9", timeout=1)
    assert caught.value.credentials_rejected
    assert caught.value.provider == slug
    if token:
        assert token not in str(caught.value)
