"""Instagram attachments, the opt-in messaging window and the HUMAN_AGENT tag, with requests."""

from __future__ import annotations

import json

import pytest
import requests

from sandbox.testing import SandboxError

TOKEN = "IGAAsandboxATTACH0123456789"
IG_ID = "17841400000000077"
USER = "1234567890"
IMAGE = "https://cdn.example.test/a.jpg"


@pytest.fixture
def account(sandbox_client):
    return sandbox_client.add_account("instagram", access_token=TOKEN, ig_id=IG_ID)


@pytest.fixture
def windowed(sandbox_client):
    return sandbox_client.add_account(
        "instagram", access_token=TOKEN, ig_id=IG_ID, session_window_hours=24
    )


def send(sandbox, message: dict, recipient: str = USER, **extra) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/v23.0/{IG_ID}/messages",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"recipient": {"id": recipient}, "message": message, **extra},
        timeout=5,
    )


def attachment(type_: str = "image", url: str = IMAGE) -> dict:
    return {"attachment": {"type": type_, "payload": {"url": url}}}


def graph_error(response: requests.Response) -> tuple[int, int, int | None, str]:
    err = response.json()["error"]
    return response.status_code, err["code"], err.get("error_subcode"), err["message"]


@pytest.mark.parametrize("type_", ["image", "video", "audio", "file"])
def test_each_attachment_type_is_sent(sandbox, sandbox_client, account, type_):
    response = send(sandbox, attachment(type_, f"https://cdn.example.test/x.{type_}"))
    assert response.status_code == 200
    assert response.json()["recipient_id"] == USER
    [entry] = sandbox_client.requests("instagram")
    assert (entry["outcome"], entry["message_id"]) == ("sent", response.json()["message_id"])


def test_a_form_post_with_a_json_string_attachment_is_sent(sandbox, account):
    response = requests.post(
        f"{sandbox.url}/v23.0/me/messages",
        data={
            "access_token": TOKEN,
            "recipient": json.dumps({"id": USER}),
            "message": json.dumps(attachment()),
        },
        timeout=5,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"attachment": {"type": "sticker", "payload": {"url": IMAGE}}}, "must be one of"),
        ({"attachment": {"type": "image", "payload": {}}}, "valid URL"),
        ({"attachment": {"type": "image"}}, "valid URL"),
        (attachment(url="ftp://cdn.example.test/a.jpg"), "valid URL"),
        ({"text": "hi", **attachment()}, "Only one of"),
    ],
)
def test_bad_attachments_are_code_100(sandbox, account, message, expected):
    status, code, _, text = graph_error(send(sandbox, message))
    assert (status, code) == (400, 100)
    assert text.startswith("(#100)") and expected in text


def test_an_unfetchable_attachment_is_upload_failure_2018047(sandbox, account):
    response = send(sandbox, attachment(url="https://cdn.example.test/404/a.jpg"))
    assert graph_error(response) == (400, 100, 2018047, "(#100) Upload attachment failure")


def test_no_window_by_default_so_any_user_can_be_messaged(sandbox, account):
    assert account["session_window_hours"] is None
    assert send(sandbox, {"text": "hi"}).status_code == 200


def test_with_a_window_a_user_must_have_written_recently(sandbox, sandbox_client, windowed):
    outside = graph_error(send(sandbox, {"text": "hi"}))
    assert outside[:3] == (400, 10, 2018278)
    assert "outside of allowed window" in outside[3]
    sandbox_client.instagram_inbound(IG_ID, USER, seconds_ago=3600)
    assert send(sandbox, {"text": "hi"}).status_code == 200
    assert send(sandbox, attachment()).status_code == 200


def test_human_agent_tag_extends_the_window_to_seven_days(sandbox, sandbox_client, windowed):
    sandbox_client.instagram_inbound(IG_ID, USER, seconds_ago=3 * 24 * 3600)
    tag = {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
    assert graph_error(send(sandbox, {"text": "late"}))[1:3] == (10, 2018278)
    assert send(sandbox, {"text": "a human here"}, **tag).status_code == 200

    sandbox_client.instagram_inbound(IG_ID, "555000", seconds_ago=8 * 24 * 3600)
    assert graph_error(send(sandbox, {"text": "too late"}, "555000", **tag))[1:3] == (10, 2018278)


@pytest.mark.parametrize(
    "extra",
    [
        {"messaging_type": "MESSAGE_TAG", "tag": "CONFIRMED_EVENT_UPDATE"},
        {"messaging_type": "MESSAGE_TAG"},
        {"messaging_type": "RESPONSE", "tag": "ACCOUNT_UPDATE"},
    ],
)
def test_other_tags_are_code_100(sandbox, account, extra):
    assert graph_error(send(sandbox, {"text": "hi"}, **extra)) == (
        400,
        100,
        None,
        "(#100) Param tag must be one of {HUMAN_AGENT}",
    )


def test_inbound_control_validates(sandbox_client, account):
    with pytest.raises(SandboxError, match="404"):
        sandbox_client.instagram_inbound("17841400000000999", USER)
    with pytest.raises(SandboxError, match="400"):
        sandbox_client.instagram_inbound(IG_ID, "not-an-igsid")
    with pytest.raises(SandboxError, match="400"):
        sandbox_client.instagram_inbound(IG_ID, USER, seconds_ago=-5)
    assert sandbox_client.instagram_inbound(IG_ID, USER)["sender_id"] == USER


def test_window_hours_are_validated(sandbox_client):
    with pytest.raises(SandboxError, match="session_window_hours"):
        sandbox_client.add_account(
            "instagram", access_token=TOKEN, ig_id=IG_ID, session_window_hours=0
        )
