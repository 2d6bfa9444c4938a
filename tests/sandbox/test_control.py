"""The sandbox control API: accounts, faults, recording, config, reset and the CLI."""

from __future__ import annotations

import json
import time

import pytest
import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from sandbox.testing import SandboxError, SandboxProcess

BOT = "123456:ABCdefGHI"


def tg(base_url: str, chat_id: int = 42, timeout: float = 5) -> requests.Response:
    return requests.post(
        f"{base_url}/bot{BOT}/sendMessage", json={"chat_id": chat_id, "text": "hi"}, timeout=timeout
    )


@pytest.fixture
def bot(sandbox_client):
    sandbox_client.configure(telegram_chat_rate=1000)
    return sandbox_client.add_account("telegram", token=BOT)


def test_health(sandbox):
    assert requests.get(sandbox.url + "/_sandbox/health", timeout=5).json() == {"status": "ok"}


def test_accounts_accept_a_list_and_reject_bad_shapes(sandbox, sandbox_client):
    registered = sandbox_client.add_accounts(
        [
            {"provider": "telegram", "token": BOT},
            {"provider": "instagram", "access_token": "IGAAx", "ig_id": "17841400000000000"},
        ]
    )
    assert [a["provider"] for a in registered] == ["telegram", "instagram"]
    for bad in (
        {"provider": "fax"},
        {"provider": "whatsapp", "account_sid": "AC123", "auth_token": "t"},
        {"provider": "telegram", "token": "nocolon"},
        {"provider": "sendgrid", "api_key": "SG.x", "rate_per_second": -1},
        {"provider": "google_calendar", "client_id": "c"},
    ):
        with pytest.raises(SandboxError, match="400"):
            sandbox_client.add_account(**bad)


def test_count_fault_applies_to_the_next_n_requests_only(sandbox, sandbox_client, bot):
    fault_id = sandbox_client.fault("telegram", status=503, count=2)
    assert fault_id
    statuses = [tg(sandbox.url, chat_id=i).status_code for i in range(1, 4)]
    assert statuses == [503, 503, 200]
    outcomes = [r["outcome"] for r in sandbox_client.requests("telegram")]
    assert outcomes == ["fault:503", "fault:503", "sent"]


def test_fault_bodies_follow_the_provider_shape(sandbox, sandbox_client, bot):
    sandbox_client.fault("telegram", status=502, count=1)
    assert tg(sandbox.url).json() == {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    sandbox_client.fault("telegram", status=500, count=1, body={"custom": True})
    assert tg(sandbox.url).json() == {"custom": True}


def test_faults_only_touch_their_provider(sandbox, sandbox_client, bot):
    sandbox_client.fault("sendgrid", status=500, count=1)
    assert tg(sandbox.url).status_code == 200


def test_seconds_fault_expires(sandbox, sandbox_client, bot):
    sandbox_client.fault("telegram", status=503, seconds=0.3)
    assert [tg(sandbox.url, i).status_code for i in (1, 2)] == [503, 503]
    [fault] = requests.get(sandbox.url + "/_sandbox/faults", timeout=5).json()
    assert fault["remaining"] is None
    time.sleep(0.35)  # the fault is defined by wall-clock expiry; nothing to synchronise with
    assert tg(sandbox.url, 3).status_code == 200


def test_clear_faults(sandbox, sandbox_client, bot):
    sandbox_client.fault("telegram", status=503)
    sandbox_client.clear_faults()
    assert tg(sandbox.url).status_code == 200


def test_fault_validation(sandbox_client):
    for spec in (
        {"provider": "fax", "status": 500},
        {"provider": "telegram", "mode": "status"},
        {"provider": "telegram", "mode": "explode"},
        {"provider": "telegram", "status": 500, "count": 0},
    ):
        provider = spec.pop("provider")
        with pytest.raises(SandboxError, match="400"):
            sandbox_client.fault(provider, **spec)


def test_timeout_fault_makes_a_client_with_half_a_second_time_out(sandbox, sandbox_client, bot):
    sandbox_client.fault("telegram", mode="timeout", count=1)
    with pytest.raises(requests.Timeout):
        tg(sandbox.url, timeout=0.5)
    assert tg(sandbox.url).status_code == 200
    assert sandbox_client.requests("telegram")[0]["outcome"] == "timeout"


def test_timeout_fault_times_out_the_twilio_sdk(sandbox, sandbox_client):
    sid, token = "AC" + "2" * 32, "tok"
    sandbox_client.add_account("whatsapp", account_sid=sid, auth_token=token)
    sandbox_client.fault("whatsapp", mode="timeout", count=1)
    client = Client(sid, token, http_client=TwilioHttpClient(timeout=0.5))
    client.api.base_url = sandbox.url
    with pytest.raises(requests.Timeout):
        client.api.v2010.accounts(sid).fetch()


def test_timeout_fault_closes_the_connection_after_the_hold(sandbox, sandbox_client, bot):
    sandbox_client.configure(timeout_hold_seconds=0.2)
    sandbox_client.fault("telegram", mode="timeout", count=1)
    with pytest.raises(requests.ConnectionError):
        tg(sandbox.url, timeout=5)


def test_latency_fault_delays_but_answers(sandbox, sandbox_client, bot):
    sandbox_client.fault("telegram", mode="latency", latency_ms=300, count=1)
    started = time.monotonic()
    assert tg(sandbox.url).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_path_filter_limits_a_fault_to_matching_paths(sandbox, sandbox_client, bot):
    sandbox_client.fault("telegram", status=500, path=f"/bot{BOT}/getMe", count=1)
    assert tg(sandbox.url).status_code == 200
    assert requests.get(f"{sandbox.url}/bot{BOT}/getMe", timeout=5).status_code == 500


def test_recording_filters_by_provider_and_since(sandbox, sandbox_client, bot):
    tg(sandbox.url, 1)
    requests.post(sandbox.url + "/v3/mail/send", json={}, timeout=5)
    tg(sandbox.url, 2)

    everything = sandbox_client.requests()
    assert [r["provider"] for r in everything] == ["telegram", "sendgrid", "telegram"]
    first = everything[0]
    assert set(first) >= {"seq", "provider", "method", "path", "query", "headers", "body", "time",
                          "status", "outcome", "message_id"}  # fmt: skip
    assert first["body"] == {"chat_id": 1, "text": "hi"}
    assert everything[1]["outcome"] == "auth_failed"
    later = sandbox_client.requests("telegram", since=first["seq"])
    assert [r["body"]["chat_id"] for r in later] == [2]
    sandbox_client.clear_requests()
    assert sandbox_client.requests() == []


def test_control_calls_are_not_recorded(sandbox, sandbox_client):
    sandbox_client.configure()
    sandbox_client.requests()
    assert sandbox_client.requests() == []


def test_reset_clears_accounts_faults_records_and_config(sandbox, sandbox_client, bot):
    sandbox_client.configure(telegram_bot_rate=5)
    sandbox_client.fault("telegram", status=500)
    tg(sandbox.url)
    sandbox_client.reset()

    assert requests.get(sandbox.url + "/_sandbox/accounts", timeout=5).json() == []
    assert requests.get(sandbox.url + "/_sandbox/faults", timeout=5).json() == []
    assert sandbox_client.configure()["telegram_bot_rate"] == 30
    assert tg(sandbox.url).status_code == 401
    assert [r["outcome"] for r in sandbox_client.requests()] == ["auth_failed"]


def test_config_rejects_unknown_or_bad_settings(sandbox_client):
    with pytest.raises(SandboxError, match="400"):
        sandbox_client.configure(telegram_warp_speed=9)
    with pytest.raises(SandboxError, match="400"):
        sandbox_client.configure(telegram_chat_rate=0)


def test_cli_preloads_accounts_and_adds_latency(tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"provider": "telegram", "token": BOT}]))
    with SandboxProcess(latency_ms=150, extra_args=["--accounts", str(accounts)]) as proc:
        assert proc.url.startswith("http://127.0.0.1:")
        started = time.monotonic()
        assert tg(proc.url).status_code == 200
        assert time.monotonic() - started >= 0.15
        proc.client.reset()
        assert requests.get(f"{proc.url}/bot{BOT}/getMe", timeout=5).status_code == 200
