"""The sandbox's Telegram sendPhoto and sendDocument: URLs, file ids, captions and errors."""

from __future__ import annotations

import pytest
import requests

TOKEN = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789"
PHOTO = "https://cdn.example.test/menu/dish.jpg"
PDF = "https://cdn.example.test/docs/menu.pdf"


@pytest.fixture
def account(sandbox_client):
    return sandbox_client.add_account("telegram", token=TOKEN, bot_username="corbi_test_bot")


def call(sandbox, method: str, **params) -> requests.Response:
    return requests.post(f"{sandbox.url}/bot{TOKEN}/{method}", json=params, timeout=5)


def description(response: requests.Response) -> tuple[int, str]:
    body = response.json()
    assert body["ok"] is False and body["error_code"] == response.status_code
    return response.status_code, body["description"]


def test_send_photo_by_url_returns_photo_sizes_and_the_visible_caption(sandbox, account):
    response = call(
        sandbox, "sendPhoto", chat_id=42, photo=PHOTO, caption="<b>Today</b>", parse_mode="HTML"
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["chat"]["id"] == 42 and result["message_id"] == 1
    assert result["caption"] == "Today"
    assert "text" not in result
    sizes = result["photo"]
    assert len(sizes) >= 2
    assert len({s["file_id"] for s in sizes}) == len(sizes)
    for size in sizes:
        assert set(size) == {"file_id", "file_unique_id", "width", "height", "file_size"}
    assert sizes[-1]["width"] > sizes[0]["width"]


def test_a_returned_file_id_can_be_sent_again_as_a_form_post(sandbox, account):
    first = call(sandbox, "sendPhoto", chat_id=42, photo=PHOTO).json()["result"]
    file_id = first["photo"][-1]["file_id"]
    again = requests.post(
        f"{sandbox.url}/bot{TOKEN}/sendPhoto", data={"chat_id": "43", "photo": file_id}, timeout=5
    )
    assert again.status_code == 200
    assert again.json()["result"]["photo"] == first["photo"]
    assert "caption" not in again.json()["result"]


def test_send_document_by_pdf_url_returns_the_document(sandbox, account):
    response = call(sandbox, "sendDocument", chat_id=42, document=PDF, caption="Menu")
    assert response.status_code == 200
    result = response.json()["result"]
    document = result["document"]
    assert set(document) == {"file_id", "file_unique_id", "file_name", "mime_type", "file_size"}
    assert (document["file_name"], document["mime_type"]) == ("menu.pdf", "application/pdf")
    assert result["caption"] == "Menu"
    again = call(sandbox, "sendDocument", chat_id=43, document=document["file_id"])
    assert again.json()["result"]["document"] == document
    crossed = call(sandbox, "sendPhoto", chat_id=44, photo=document["file_id"])
    assert description(crossed) == (
        400,
        "Bad Request: can't use file of type Document as Photo",
    )


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("sendPhoto", {"photo": "ftp://cdn.example.test/a.jpg"}, "wrong file identifier"),
        ("sendPhoto", {"photo": "not a file id"}, "wrong file identifier"),
        ("sendPhoto", {"photo": "AgACAgQAAxkBAAIunknownfileid0000"}, "wrong file identifier"),
        ("sendPhoto", {"photo": "https://cdn.example.test/404/a.jpg"}, "failed to get HTTP URL"),
        ("sendPhoto", {"photo": "https://cdn.example.test/page.html"}, "wrong type of the web"),
        ("sendDocument", {"document": "https://cdn.example.test/a.docx"}, "wrong file identifier"),
        ("sendDocument", {"document": "https://cdn.example.test/404.pdf"}, "failed to get HTTP"),
        ("sendPhoto", {}, "there is no photo in the request"),
        ("sendDocument", {}, "there is no document in the request"),
        ("sendPhoto", {"photo": PHOTO, "caption": "x" * 1025}, "message caption is too long"),
        (
            "sendPhoto",
            {"photo": PHOTO, "caption": "<x>hi</x>", "parse_mode": "HTML"},
            "can't parse entities: Unsupported start tag",
        ),
        (
            "sendDocument",
            {"document": PDF, "caption": "1.5", "parse_mode": "MarkdownV2"},
            "can't parse entities: Character '.' is reserved",
        ),
        ("sendPhoto", {"photo": PHOTO, "parse_mode": "bbcode"}, "unsupported parse_mode"),
    ],
)
def test_media_errors_use_telegram_descriptions(sandbox, account, method, params, expected):
    status, text = description(call(sandbox, method, chat_id=42, **params))
    assert status == 400
    assert text.startswith("Bad Request: ") and expected in text


def test_a_caption_of_1024_visible_chars_is_accepted(sandbox, account):
    caption = "<b>" + "x" * 1024 + "</b>"
    response = call(
        sandbox, "sendPhoto", chat_id=42, photo=PHOTO, caption=caption, parse_mode="HTML"
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("chat_id", "status", "expected"),
    [
        (403, 403, "Forbidden: bot was blocked by the user"),
        (40301, 403, "Forbidden: user is deactivated"),
        ("abc", 400, "Bad Request: chat not found"),
        ("", 400, "Bad Request: chat_id is empty"),
    ],
)
def test_media_sends_share_the_magic_chats(sandbox, account, chat_id, status, expected):
    assert description(call(sandbox, "sendPhoto", chat_id=chat_id, photo=PHOTO)) == (
        status,
        expected,
    )


def test_media_sends_share_the_per_chat_flood_limit(sandbox, sandbox_client, account):
    assert call(sandbox, "sendMessage", chat_id=42, text="hi").status_code == 200
    limited = call(sandbox, "sendDocument", chat_id=42, document=PDF)
    assert limited.status_code == 429
    assert limited.json()["parameters"]["retry_after"] >= 1
    [*_, entry] = sandbox_client.requests("telegram")
    assert entry["outcome"] == "rate_limited"
