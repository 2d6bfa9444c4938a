"""SSRF: refused at save time (400 url_not_allowed on `url`) and again at send time; redirects
are never followed, so an allowed receiver cannot bounce a delivery to an internal address."""

from __future__ import annotations

import ipaddress

import pytest

from shared.events import emit
from shared.events.delivery import event_deliver
from shared.events.models import EventDelivery, WebhookEndpoint
from shared.events.ssrf import UrlNotAllowed, blocked_reason, check_url
from tests.receivers import make_endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def strict(settings):
    """Production rules: https only, no private targets."""
    settings.WEBHOOK_ALLOW_HTTP = False
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    settings.WEBHOOK_PRIVATE_TARGET_ALLOWLIST = []
    return settings


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://[fd00:ec2::254]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::a00:1]/",
        "http://2130706433/",  # 127.0.0.1 as one integer
        "http://0x7f.1/",
    ],
)
def test_save_refuses_internal_targets(url, strict, cast, client_for):
    strict.WEBHOOK_ALLOW_HTTP = True  # so the address, not the scheme, is what is refused
    response = client_for(cast["admin"]).post(
        "/api/webhook-endpoints/", {"url": url}, format="json"
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "url_not_allowed" and list(body["errors"]) == ["url"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://93.184.215.14/hook", "https"),
        ("ftp://93.184.215.14/hook", "https"),
        ("https://user:pw@93.184.215.14/hook", "credentials"),
        ("https:///nohost", "no host"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
        ("https://93.184.215.14:99999/", "malformed"),
    ],
)
def test_save_refuses_other_bad_urls(url, why, strict, cast, client_for):
    response = client_for(cast["admin"]).post(
        "/api/webhook-endpoints/", {"url": url}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "url_not_allowed"
    assert why in response.json()["errors"]["url"][0]


def test_a_public_https_address_is_allowed(strict):
    target = check_url("https://93.184.215.14/hooks?x=1")
    assert (target.address, target.port, target.path) == ("93.184.215.14", 443, "/hooks?x=1")


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "93.184.215.14", "1.1.1.1"])
def test_public_addresses_pass(address):
    assert blocked_reason(ipaddress.ip_address(address)) == ""


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.2",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "100.127.255.254",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "240.0.0.1",
        "255.255.255.255",
        "::ffff:10.0.0.1",
        "192.0.0.1",
        "198.18.0.1",
    ],
)
def test_internal_addresses_are_blocked(address):
    assert blocked_reason(ipaddress.ip_address(address))


def test_the_allowlist_lets_one_receiver_through_and_nothing_else(strict, receiver):
    strict.WEBHOOK_ALLOW_HTTP = True
    strict.WEBHOOK_PRIVATE_TARGET_ALLOWLIST = [f"127.0.0.1:{receiver.port}"]
    assert check_url(receiver.url).address == "127.0.0.1"
    with pytest.raises(UrlNotAllowed):
        check_url(f"http://127.0.0.1:{receiver.port + 1}/")
    with pytest.raises(UrlNotAllowed):
        check_url(f"http://10.0.0.1:{receiver.port}/")


def test_a_redirect_to_an_internal_address_is_not_followed(strict, cast, client_for, make_receiver):
    """The allowed receiver answers 302 to an internal service (private, not allow-listed):
    the internal service must see nothing and the attempt is a failure."""
    outside, internal = make_receiver(), make_receiver()
    strict.WEBHOOK_ALLOW_HTTP = True
    strict.WEBHOOK_PRIVATE_TARGET_ALLOWLIST = [f"127.0.0.1:{outside.port}"]
    admin = client_for(cast["admin"])
    refused = admin.post("/api/webhook-endpoints/", {"url": internal.url}, format="json")
    assert refused.json()["code"] == "url_not_allowed"  # the internal one is really refused
    created = admin.post("/api/webhook-endpoints/", {"url": outside.url}, format="json")
    assert created.status_code == 201, created.content
    outside.answer(302, {"Location": internal.url + "?stolen=1"})
    emit(cast["admin"].org.pk, "message.sent", {"message_id": 1})

    delivery = EventDelivery.objects.get()
    assert event_deliver(delivery_pk=delivery.pk) == "retry"

    assert len(outside.requests) == 1 and internal.requests == []
    delivery.refresh_from_db()
    assert delivery.last_status_code == 302
    assert delivery.last_error == "HTTP 302: redirects are not followed."


def test_send_time_check_refuses_an_address_that_became_internal(strict, cast, receiver):
    """Saved while allowed; by send time the rules (or the DNS answer) say internal."""
    make_endpoint(cast["admin"].org, f"http://localhost:{receiver.port}/hook")
    strict.WEBHOOK_ALLOW_HTTP = True
    emit(cast["admin"].org.pk, "message.sent", {"message_id": 1})
    delivery = EventDelivery.objects.get()

    assert event_deliver(delivery_pk=delivery.pk) == "retry"

    assert receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("Not sent: The host localhost resolves to a loopback")
    assert delivery.last_status_code is None


def test_send_time_connects_to_the_checked_address_with_the_original_host(settings, cast, receiver):
    make_endpoint(cast["admin"].org, f"http://localhost:{receiver.port}/hook?a=1")
    emit(cast["admin"].org.pk, "message.sent", {"message_id": 1})
    assert event_deliver(delivery_pk=EventDelivery.objects.get().pk) == "delivered"
    (got,) = receiver.requests
    assert got.headers["host"] == f"localhost:{receiver.port}"
    assert got.path == "/hook?a=1"
