"""The sandbox's SendGrid v3 API, driven through the official sendgrid SDK."""

from __future__ import annotations

import re
import time

import pytest
from python_http_client.exceptions import (
    BadRequestsError,
    ForbiddenError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Mail

KEY = "SG.sandboxkey.sandboxsecret0123456789"
SENDER = "from@example.test"


@pytest.fixture
def account(sandbox_client):
    return sandbox_client.add_account(
        "sendgrid", api_key=KEY, verified_senders=[SENDER], scopes=["mail.send", "scopes.read"]
    )


def sg(sandbox, key: str = KEY) -> SendGridAPIClient:
    return SendGridAPIClient(api_key=key, host=sandbox.url)


def mail(to: str = "to@example.test", sender: str = SENDER) -> Mail:
    return Mail(from_email=sender, to_emails=to, subject="hi", plain_text_content="body")


def test_send_is_202_with_empty_body_and_message_id(sandbox, sandbox_client, account):
    response = sg(sandbox).send(mail())

    assert response.status_code == 202
    assert response.body == b""
    message_id = response.headers["X-Message-Id"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", message_id)
    assert int(response.headers["X-RateLimit-Remaining"]) >= 0
    assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())
    [sent] = sandbox_client.requests("sendgrid")
    assert sent["body"]["personalizations"] == [{"to": [{"email": "to@example.test"}]}]
    assert (sent["status"], sent["outcome"], sent["message_id"]) == (202, "sent", message_id)


def test_scopes_lists_the_key_scopes(sandbox, account):
    response = sg(sandbox).client.scopes.get()
    assert response.status_code == 200
    assert response.to_dict == {"scopes": ["mail.send", "scopes.read"]}


def test_wrong_key_is_unauthorized(sandbox, account):
    with pytest.raises(UnauthorizedError) as caught:
        sg(sandbox, key="SG.wrong.key").send(mail())
    assert caught.value.to_dict["errors"][0]["message"] == (
        "The provided authorization grant is invalid, expired, or revoked"
    )


def test_unverified_sender_is_forbidden_on_field_from(sandbox, account):
    with pytest.raises(ForbiddenError) as caught:
        sg(sandbox).send(mail(sender="stranger@example.test"))
    [error] = caught.value.to_dict["errors"]
    assert error["field"] == "from"
    assert error["message"].startswith("The from address does not match a verified Sender Identity")


def test_key_without_mail_send_scope_is_forbidden(sandbox, sandbox_client):
    sandbox_client.add_account("sendgrid", api_key=KEY, scopes=["user.profile.read"])
    with pytest.raises(ForbiddenError) as caught:
        sg(sandbox).send(mail())
    assert caught.value.to_dict["errors"][0]["message"] == "access forbidden"


def test_magic_invalid_recipient_is_400_on_the_email_field(sandbox, account):
    with pytest.raises(BadRequestsError) as caught:
        sg(sandbox).send(mail(to="invalid@sandbox.test"))
    [error] = caught.value.to_dict["errors"]
    assert error["field"] == "personalizations.0.to.0.email"


def test_validation_reports_every_problem(sandbox, account):
    with pytest.raises(BadRequestsError) as caught:
        sg(sandbox).send({"personalizations": [{"to": [{"email": "a@example.test"}]}]})
    fields = {e["field"] for e in caught.value.to_dict["errors"]}
    assert fields == {"from", "subject", "content"}


def test_duplicate_recipients_are_rejected(sandbox, account):
    body = mail().get()
    body["personalizations"][0]["cc"] = [{"email": "TO@example.test"}]
    with pytest.raises(BadRequestsError) as caught:
        sg(sandbox).send(body)
    assert caught.value.to_dict["errors"][0]["field"] == "personalizations.0"


def test_sandbox_mode_validates_without_sending(sandbox, account):
    body = {**mail().get(), "mail_settings": {"sandbox_mode": {"enable": True}}}
    response = sg(sandbox).send(body)
    assert response.status_code == 200
    assert "X-Message-Id" not in response.headers


def test_account_over_its_rate_gets_429_with_reset(sandbox, sandbox_client):
    sandbox_client.add_account("sendgrid", api_key=KEY, rate_per_second=1)
    client = sg(sandbox)
    client.send(mail())
    with pytest.raises(TooManyRequestsError) as caught:
        client.send(mail())
    err = caught.value
    assert err.to_dict == {
        "errors": [{"message": "too many requests", "field": None, "help": None}]
    }
    assert err.headers["X-RateLimit-Remaining"] == "0"
    assert int(err.headers["X-RateLimit-Reset"]) >= int(time.time())


def test_fault_429_sets_reset_to_now_plus_retry_after(sandbox, sandbox_client, account):
    sandbox_client.fault("sendgrid", status=429, retry_after=7, count=1)
    with pytest.raises(TooManyRequestsError) as caught:
        sg(sandbox).send(mail())
    reset = int(caught.value.headers["X-RateLimit-Reset"])
    assert reset - time.time() == pytest.approx(7, abs=1.5)
    assert sg(sandbox).send(mail()).status_code == 202


def test_fault_503_is_service_unavailable(sandbox, sandbox_client, account):
    sandbox_client.fault("sendgrid", status=503, count=1)
    with pytest.raises(ServiceUnavailableError):
        sg(sandbox).send(mail())
    [faulted, *_] = sandbox_client.requests("sendgrid")
    assert faulted["outcome"] == "fault:503"
