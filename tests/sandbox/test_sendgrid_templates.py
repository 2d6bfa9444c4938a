"""SendGrid dynamic templates and attachments, through the official sendgrid SDK."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from python_http_client.exceptions import BadRequestsError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    ContentId,
    Disposition,
    FileContent,
    FileName,
    FileType,
    Mail,
    To,
)

KEY = "SG.templatekey.templatesecret0123456789"
SENDER = "from@example.test"
TEMPLATE = "d-0123456789abcdef0123456789abcdef"
PDF = base64.b64encode(b"%PDF-1.4 sandbox").decode()


@pytest.fixture
def sg(sandbox, sandbox_client) -> SendGridAPIClient:
    sandbox_client.add_account("sendgrid", api_key=KEY, verified_senders=[SENDER])
    return SendGridAPIClient(api_key=KEY, host=sandbox.url)


def templated(data: object = None) -> Mail:
    mail = Mail(from_email=SENDER, to_emails="to@example.test")
    mail.template_id = TEMPLATE
    mail.dynamic_template_data = data if data is not None else {"name": "Ann"}
    return mail


def errors_of(sg: SendGridAPIClient, body: dict) -> list[dict]:
    with pytest.raises(BadRequestsError) as caught:
        sg.client.mail.send.post(request_body=body)
    return json.loads(caught.value.body)["errors"]


def test_a_dynamic_template_needs_no_subject_or_content(sg, sandbox_client):
    response = sg.send(templated())
    assert response.status_code == 202
    [entry] = sandbox_client.requests("sendgrid")
    assert entry["body"]["template_id"] == TEMPLATE
    assert entry["body"]["personalizations"][0]["dynamic_template_data"] == {"name": "Ann"}


def test_per_recipient_template_data_is_accepted(sg):
    mail = Mail(
        from_email=SENDER,
        to_emails=[
            To("a@example.test", dynamic_template_data={"name": "A"}),
            To("b@example.test", dynamic_template_data={"name": "B"}),
        ],
        is_multiple=True,
    )
    mail.template_id = TEMPLATE
    assert sg.send(mail).status_code == 202


@pytest.mark.parametrize("template_id", ["d-123", "welcome", "d-" + "g" * 32, "0" * 36])
def test_a_malformed_template_id_is_400(sg, template_id):
    mail = templated()
    mail.template_id = template_id
    with pytest.raises(BadRequestsError) as caught:
        sg.send(mail)
    errors = json.loads(caught.value.body)["errors"]
    assert {
        "message": f"The template_id must be a valid GUID, you provided '{template_id}'.",
        "field": "template_id",
        "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
        "#message.template_id",
    } in errors
    assert "content" in {e["field"] for e in errors}


def test_a_legacy_guid_template_is_accepted_with_substitutions(sg):
    body = templated().get()
    body["template_id"] = "13b8f94f-bcae-4ec6-b752-70d6cb59f932"
    body["personalizations"][0].pop("dynamic_template_data")
    body["personalizations"][0]["substitutions"] = {"-name-": "Ann"}
    assert sg.client.mail.send.post(request_body=body).status_code == 202


def test_substitutions_with_a_dynamic_template_are_400(sg):
    body = templated().get()
    body["personalizations"][0]["substitutions"] = {"-name-": "Ann"}
    [error] = errors_of(sg, body)
    assert error["field"] == "personalizations.0.substitutions"


def test_dynamic_template_data_must_be_an_object(sg):
    body = templated().get()
    body["personalizations"][0]["dynamic_template_data"] = "Ann"
    [error] = errors_of(sg, body)
    assert error["field"] == "personalizations.0.dynamic_template_data"
    assert error["message"] == "Invalid type. Expected: object, given: string."


def test_attachments_from_the_sdk_are_accepted(sg, sandbox_client):
    mail = templated()
    mail.add_attachment(
        Attachment(
            FileContent(PDF),
            FileName("menu.pdf"),
            FileType("application/pdf"),
            Disposition("attachment"),
        )
    )
    logo = Attachment(FileContent(PDF), FileName("logo.png"), FileType("image/png"))
    logo.disposition = Disposition("inline")
    logo.content_id = ContentId("logo")
    mail.add_attachment(logo)
    assert sg.send(mail).status_code == 202
    [entry] = sandbox_client.requests("sendgrid")
    assert sorted(a["filename"] for a in entry["body"]["attachments"]) == ["logo.png", "menu.pdf"]


@pytest.mark.parametrize(
    ("item", "field", "message"),
    [
        ({"filename": "a.pdf"}, "attachments.0.content", "The attachment content is required."),
        (
            {"content": "", "filename": "a.pdf"},
            "attachments.0.content",
            "The attachment content is required.",
        ),
        (
            {"content": "not base64!", "filename": "a.pdf"},
            "attachments.0.content",
            "The attachment content must be base64 encoded.",
        ),
        ({"content": PDF}, "attachments.0.filename", "filename parameter is required"),
        (
            {"content": PDF, "filename": "a.pdf", "disposition": "embedded"},
            "attachments.0.disposition",
            'either "inline" or "attachment"',
        ),
        (
            {"content": PDF, "filename": "a.png", "disposition": "inline"},
            "attachments.0.content_id",
            "content_id parameter is required",
        ),
        (
            {"content": PDF, "filename": "a.pdf", "type": "text/plain; charset=x"},
            "attachments.0.type",
            "cannot contain ';'",
        ),
    ],
)
def test_bad_attachments_are_400_with_their_field(sg, item, field, message):
    body = templated().get()
    body["attachments"] = [item]
    [error] = errors_of(sg, body)
    assert error["field"] == field
    assert message in error["message"]


def test_every_problem_is_reported_at_once(sg):
    body = templated().get()
    body["template_id"] = "nope"
    body["attachments"] = [{"content": PDF, "filename": "a.pdf"}, {"content": "%%"}]
    fields = {e["field"] for e in errors_of(sg, body)}
    assert {"template_id", "attachments.1.content", "attachments.1.filename"} <= fields


def test_attachment_content_is_never_echoed_in_error_answers(sandbox, sg):
    secret = base64.b64encode(b"private attachment bytes").decode()
    body = templated().get()
    body["attachments"] = [{"content": secret, "disposition": "embedded"}]
    response = requests.post(
        f"{sandbox.url}/v3/mail/send",
        headers={"Authorization": f"Bearer {KEY}"},
        json=body,
        timeout=5,
    )
    assert response.status_code == 400
    assert secret not in response.text
