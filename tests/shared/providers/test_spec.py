"""The provider specs are the one place that lists providers: everything else is derived."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from drf_spectacular.generators import SchemaGenerator

from devtools import fieldguide
from shared.delivery.scheduling import _configured_rate
from shared.errors import ValidationFailed
from shared.models import Provider
from shared.providers import fields
from shared.providers.base import OutboundMessage, ProviderAdapter
from shared.providers.registry import MESSAGING_SLUGS, PROVIDERS, SLUGS, SPECS, spec_for
from shared.providers.spec import ExtraField, MessageRules, ProviderSpec
from shared.services.providers import provider_endpoint
from shared.validation import validate_destination, validate_extra, validate_token


def test_the_readme_field_guide_is_rendered_from_the_specs():
    readme = fieldguide.README.read_text()

    assert fieldguide.readme_block(readme) == fieldguide.render()
    for spec in SPECS.values():
        assert f"| `{spec.slug}` | {spec.token_help} |" in readme


def test_model_choices_and_schema_enums_follow_the_specs():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    enums = schema["components"]["schemas"]

    assert Provider.choices == [(spec.slug, spec.label) for spec in SPECS.values()]
    assert enums["ProviderEnum"]["enum"] == list(SLUGS)
    assert enums["MessageCreateProviderEnum"]["enum"] == list(MESSAGING_SLUGS)
    assert "google_calendar" in SLUGS and "google_calendar" not in MESSAGING_SLUGS


def test_each_adapter_takes_slug_and_vendor_from_its_spec():
    for slug, adapter in PROVIDERS.items():
        assert adapter.spec is SPECS[slug] is spec_for(slug)
        assert (adapter.slug, adapter.vendor) == (slug, adapter.spec.vendor)
    with pytest.raises(KeyError, match="unknown provider 'fax'"):
        spec_for("fax")


@pytest.mark.parametrize("slug", SLUGS)
def test_the_base_url_comes_from_the_setting_the_spec_names(settings, slug):
    spec = SPECS[slug]
    setattr(settings, spec.base_url_setting, f"http://127.0.0.1:9/{slug}")

    base_url, options = provider_endpoint(slug)

    assert base_url == f"http://127.0.0.1:9/{slug}"
    assert options == {opt: getattr(settings, name) for opt, name in spec.adapter_settings.items()}


@pytest.mark.parametrize("slug", SLUGS)
def test_the_default_rate_is_the_spec_s_unless_a_setting_overrides_it(settings, slug):
    settings.RATE_LIMITS = {}
    assert _configured_rate(None, slug) == SPECS[slug].default_rate_per_second

    settings.RATE_LIMITS = {slug: 3.5}
    assert _configured_rate(None, slug) == 3.5
    assert _configured_rate(7, slug) == 7.0  # extra.rate_limit_per_second wins


def test_rate_limit_settings_are_read_from_the_environment_by_slug():
    env = {
        **os.environ,
        "RATE_LIMIT_WHATSAPP": "40",
        "RATE_LIMIT_TELEGRAM_CHAT": "0.5",
        "CORBI_SKIP_LOGGING_SETUP": "1",
    }
    env.pop("RATE_LIMIT_SENDGRID", None)
    code = (
        "from django.conf import settings; print(settings.RATE_LIMITS, settings.TELEGRAM_CHAT_RATE)"
    )
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env={**env, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        cwd=fieldguide.README.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert out.split() == ["{'whatsapp':", "40.0}", "0.5"]


@pytest.mark.parametrize("slug", SLUGS)
def test_connect_requires_exactly_the_fields_the_spec_marks_required(slug):
    required = {f"extra.{f.name}" for f in SPECS[slug].extra if f.required}

    if required:
        with pytest.raises(ValidationFailed) as caught:
            validate_extra(slug, {})
        assert set(caught.value.errors) == required
    else:
        cleaned = validate_extra(slug, {})
        assert cleaned == {f.name: f.default for f in SPECS[slug].extra if f.default}


class _FaxAdapter(ProviderAdapter):
    """A sixth provider, declared in one place."""

    spec = ProviderSpec(
        slug="fax",
        label="Fax",
        vendor="FaxCo",
        token_help="FaxCo key",
        token_problem=lambda token: "" if token.startswith("FX-") else "Must start with FX-.",
        extra=(
            ExtraField("station", fields.short_text, "sending station", required=True),
            ExtraField("to_fax", fields.phone, "test destination", test_destination=True),
        ),
        base_url_setting="FAX_API_BASE",
        default_rate_per_second=2.0,
        messages=MessageRules(destination=fields.phone, destination_help="E.164", body_limit=10),
    )

    def check(self) -> str:
        return "ok"

    def send(self, message: OutboundMessage) -> str:
        return "fax-1"


def test_a_sixth_provider_is_validated_and_located_from_its_spec_alone(monkeypatch, settings):
    monkeypatch.setitem(SPECS, "fax", _FaxAdapter.spec)
    settings.FAX_API_BASE = "http://127.0.0.1:9/fax"

    assert validate_token("fax", " FX-123 ") == "FX-123"
    with pytest.raises(ValidationFailed) as caught:
        validate_token("fax", "nope")
    assert caught.value.errors == {"token": ["Must start with FX-."]}
    assert validate_extra("fax", {"station": " HQ "}) == {"station": "HQ"}
    with pytest.raises(ValidationFailed) as caught:
        validate_extra("fax", {"to_fax": "+14155550100"})
    assert set(caught.value.errors) == {"extra.station"}
    assert validate_destination("fax", "+14155550100") == "+14155550100"
    assert provider_endpoint("fax") == ("http://127.0.0.1:9/fax", {})
    assert _FaxAdapter.spec.test_destination == "to_fax"
    assert (_FaxAdapter.slug, _FaxAdapter.vendor) == ("fax", "FaxCo")
