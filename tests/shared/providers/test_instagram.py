"""InstagramGraph against the sandbox's Graph API (bearer token, never a query parameter)."""

from __future__ import annotations

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.instagram import InstagramGraph

TOKEN = "IGAACANARYinstagramTOKENabcdefghijklmnop"
IG_ID = "17841400000000001"
USER = "1234567890"


@pytest.fixture
def account(sandbox_client):
    sandbox_client.add_account("instagram", access_token=TOKEN, ig_id=IG_ID, username="corbi.shop")


def adapter(base_url: str, *, token: str = TOKEN, timeout: float = 5.0) -> InstagramGraph:
    return InstagramGraph(
        token=token,
        extra={"instagram_scoped_id": IG_ID},
        base_url=f"{base_url}/v23.0",
        timeout=timeout,
    )


def send_error(provider: InstagramGraph, to: str = USER) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        provider.send(OutboundMessage(to=to, body="hello"))
    return caught.value


def test_instagram_check_names_the_account(sandbox_url, account):
    assert adapter(sandbox_url).check().startswith("Instagram account @corbi.shop")


def test_instagram_send_returns_the_message_id(sandbox_url, sandbox_client, account):
    message_id = adapter(sandbox_url).send(OutboundMessage(to=USER, body="hello"))

    assert message_id
    sent = sandbox_client.requests("instagram")[-1]
    assert sent["method"] == "POST"
    assert sent["path"] == f"/v23.0/{IG_ID}/messages"
    assert sent["body"] == {"recipient": {"id": USER}, "message": {"text": "hello"}}
    assert "access_token" not in str(sent.get("query", ""))


def test_instagram_wrong_token_is_credentials_rejected(sandbox_url, account, assert_secret_free):
    wrong = "IGAACANARYwrongTOKENabcdefghijklmnop"
    err = send_error(adapter(sandbox_url, token=wrong))
    assert err.kind == "credentials"
    assert err.code == "190"
    assert_secret_free(err, wrong)


@pytest.mark.parametrize("recipient", ["551", "100", "10"])
def test_instagram_unreachable_recipient_is_permanent(sandbox_url, account, recipient):
    err = send_error(adapter(sandbox_url), to=recipient)
    assert err.kind == "permanent"
    assert err.code == recipient


def test_instagram_rate_limit_waits_the_business_use_case_estimate(
    sandbox_url, sandbox_client, account
):
    sandbox_client.fault("instagram", mode="status", status=429, retry_after=120, count=1)
    err = send_error(adapter(sandbox_url))
    assert err.rate_limited
    assert err.code == "4"
    # X-Business-Use-Case-Usage counts whole minutes.
    assert err.retry_after == 120


def test_instagram_account_over_its_rate_gets_80002(sandbox_url, sandbox_client):
    sandbox_client.add_account("instagram", access_token=TOKEN, ig_id=IG_ID, rate_per_second=1)
    provider = adapter(sandbox_url)
    provider.send(OutboundMessage(to=USER, body="first"))
    err = send_error(provider)
    assert err.rate_limited
    assert err.code == "80002"
    assert err.retry_after == 60


def test_instagram_500_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("instagram", mode="status", status=500, count=1)
    assert send_error(adapter(sandbox_url)).kind == "transient"


def test_instagram_timeout_is_transient(sandbox_url, sandbox_client, account):
    sandbox_client.fault("instagram", mode="timeout", count=1)
    err = send_error(adapter(sandbox_url, timeout=0.5))
    assert err.kind == "transient"
    assert str(err) == "Instagram did not answer within 0.5 s"


def test_instagram_permission_error_is_permanent(sandbox_url, sandbox_client, account):
    sandbox_client.fault("instagram", mode="status", status=403, count=1)
    err = send_error(adapter(sandbox_url))
    assert err.kind == "permanent"
    assert err.code == "200"
