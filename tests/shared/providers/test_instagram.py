"""InstagramGraph against the sandbox's Graph API (bearer token, never a query parameter)."""

from __future__ import annotations

import pytest

from shared.providers import OutboundMessage, ProviderError
from shared.providers.instagram import InstagramGraph
from tests.shared.providers.helpers import Answer, Mapped, assert_mapped, provoke

TOKEN = "IGAACANARYq7Zp9Kd3TOKENabcdefghijklmnop"
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


WRONG = "IGAACANARYwrongTOKENabcdefghijklmnop"


def graph_error(code: int, message: str, subcode: int | None = None) -> dict:
    """A Graph API error body."""
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Atrace"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


# How the sandbox answers -> the ProviderError the adapter must raise.
ERRORS = [
    pytest.param(
        Answer(token=WRONG),
        Mapped("credentials", "190", status=400, says="Instagram rejected the access token (190)"),
        id="unknown-token-190",
    ),
    *(
        pytest.param(
            Answer(to=recipient),
            Mapped("permanent", recipient, status=400),
            id=f"unreachable-recipient-{recipient}",
        )
        for recipient in ("551", "100", "10")
    ),
    pytest.param(
        Answer(fault={"status": 403}),
        Mapped("permanent", "200", status=403),
        id="permission-error-200",
    ),
    pytest.param(
        Answer(fault={"status": 429, "retry_after": 120}),
        # X-Business-Use-Case-Usage counts whole minutes.
        Mapped("rate_limited", "4", retry_after=120, status=429),
        id="app-limit-4-waits-the-business-use-case-estimate",
    ),
    pytest.param(
        Answer(account={"rate_per_second": 1}, second=True),
        Mapped("rate_limited", "80002", retry_after=60, status=403),
        id="account-over-its-rate-80002",
    ),
    pytest.param(
        Answer(fault={"status": 429, "body": "Too Many Requests"}),
        Mapped("rate_limited", retry_after=60, status=429),
        id="http-429-without-a-graph-error",
    ),
    pytest.param(
        Answer(fault={"status": 500}),
        Mapped("transient", "2", status=500),
        id="http-500-code-2",
    ),
    pytest.param(
        Answer(fault={"status": 400, "body": graph_error(1, "An unknown error occurred")}),
        Mapped("transient", "1", status=400, says="An unknown error occurred (1)"),
        id="unknown-error-1",
    ),
    pytest.param(
        Answer(fault={"status": 502, "body": "<html>Bad Gateway</html>"}),
        Mapped("transient", status=502, says="Instagram answered HTTP 502"),
        id="http-502-not-json",
    ),
    pytest.param(
        Answer(fault={"mode": "timeout"}),
        Mapped("transient", says="Instagram did not answer within 0.5 s"),
        id="timeout",
    ),
]


@pytest.mark.parametrize(("answer", "mapped"), ERRORS)
def test_instagram_maps_each_provider_answer_to_one_error(
    sandbox_url, sandbox_client, assert_secret_free, answer, mapped
):
    token = answer.token or TOKEN
    provider = adapter(sandbox_url, token=token, timeout=answer.timeout)
    message = OutboundMessage(to=answer.to or USER, body="hello")
    account = {"access_token": TOKEN, "ig_id": IG_ID, "username": "corbi.shop"}
    err = provoke(
        sandbox_client, "instagram", answer, account, provider, lambda: provider.send(message)
    )
    assert_mapped(err, mapped, assert_secret_free, [token])


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://cdn.example.com/a.jpg", "image"),
        ("https://cdn.example.com/a.mp4", "video"),
        ("https://cdn.example.com/a.m4a", "audio"),
        ("https://cdn.example.com/menu.pdf", "file"),
    ],
)
def test_instagram_media_goes_as_one_attachment_by_url(
    sandbox_url, sandbox_client, account, url, kind
):
    adapter(sandbox_url).send(OutboundMessage(to=USER, body="", media_urls=(url,)))

    sent = sandbox_client.requests("instagram")[-1]["body"]
    assert sent["message"] == {"attachment": {"type": kind, "payload": {"url": url}}}


def test_instagram_human_agent_tag_is_sent_as_a_message_tag(sandbox_url, sandbox_client, account):
    adapter(sandbox_url).send(OutboundMessage(to=USER, body="hi", tag="HUMAN_AGENT"))

    sent = sandbox_client.requests("instagram")[-1]["body"]
    assert (sent["messaging_type"], sent["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")


def test_instagram_tag_lets_a_person_reply_within_7_days_outside_the_window(
    sandbox_url, sandbox_client
):
    sandbox_client.add_account(
        "instagram", access_token=TOKEN, ig_id=IG_ID, username="corbi.shop", session_window_hours=24
    )
    sandbox_client.instagram_inbound(IG_ID, USER, seconds_ago=3 * 86400)
    bot = adapter(sandbox_url)
    with pytest.raises(ProviderError) as caught:
        bot.send(OutboundMessage(to=USER, body="hi"))
    assert (caught.value.kind, caught.value.code) == ("permanent", "10")

    assert bot.send(OutboundMessage(to=USER, body="hi", tag="HUMAN_AGENT"))
