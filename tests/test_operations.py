"""Running the core: health with live counts, graceful shutdown on SIGTERM during a call,
structured JSON logs with event fields, and no secret in any log of a whole session."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from softphone.engine import Operator, PresenceState, token_url_provider
from softphone.protocol import EndReason
from softphone.server import CoreServer

from .conftest import (
    CoreProcess,
    EventLog,
    sandbox_operator,
    start_core_process,
    wait_until,
)
from .test_security import (
    echo_media_leg,
    presence,
    recv_json,
    send_json,
)

ECHO = "+15550100"
LINE_A = "pn_15550150"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# --------------------------------------------------------------------------- health


async def test_health_reports_live_counts(core: CoreServer) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:

        async def health() -> dict[str, Any]:
            response = await client.get("/v1/health")
            assert response.status_code == 200
            body = response.json()
            assert isinstance(body, dict)
            return body

        idle = await health()
        assert idle == {
            "status": "ok",
            "protocol": 1,
            "sandbox": True,
            "tls": False,
            "sessions": 0,
            "calls": 0,
            "operatorsOnline": 0,
            "callsInProgress": 0,
            "startedAt": idle["startedAt"],
            "uptimeSeconds": idle["uptimeSeconds"],
        }
        assert ISO_UTC.match(idle["startedAt"])
        assert idle["uptimeSeconds"] >= 0
        # Two sessions of one operator and one of another; one call ringing, one in progress.
        async with presence(core, "op-1") as one, presence(core, "op-1"), presence(core, "op-2"):
            await send_json(
                one, {"type": "set_availability", "id": "a", "phoneNumberIds": [LINE_A]}
            )
            assert (await recv_json(one))["type"] == "availability"
            await core.core.place_inbound("+15559990000", "+15550151", {})
            async with echo_media_leg(core, one) as (sid, _):
                await wait_until(lambda: core.core.calls[sid].status == "in_progress", 3)
                busy = await health()
        assert (busy["sessions"], busy["operatorsOnline"]) == (3, 2)
        assert (busy["calls"], busy["callsInProgress"]) == (2, 1)
        assert busy["uptimeSeconds"] >= idle["uptimeSeconds"]
        assert busy["startedAt"] == idle["startedAt"]


# --------------------------------------------------------------------------- shutdown


async def test_sigterm_during_a_call_ends_it_and_records_it(core_process: CoreProcess) -> None:
    operator = sandbox_operator(core_process.url, reconnect_backoff=(0.2,))
    try:
        await operator.go_online([LINE_A])
        call = await operator.dial(ECHO, caller_id="+15550150")
        assert await call.wait_started(10)
        await wait_until(lambda: call.stats.frames_received > 0, timeout=5)
        sid = call.call_sid
        sent = time.monotonic()
        core_process.process.send_signal(signal.SIGTERM)
        assert await call.wait_ended(5) == EndReason.FAILED
        assert call.end_message == "the core is shutting down"
        code = await asyncio.to_thread(core_process.process.wait, 10)
        assert code == 0
        assert time.monotonic() - sent < 5.0
        assert operator.state in (PresenceState.RECONNECTING, PresenceState.OFFLINE)
    finally:
        await operator.close()
    assert core_process.process.stderr is not None
    errors = core_process.process.stderr.read()
    assert "Traceback" not in errors
    with sqlite3.connect(core_process.data_dir / "sandbox.db") as db:
        row = db.execute(
            "SELECT status, end_reason, end_message, ended_at FROM calls WHERE call_sid = ?",
            (sid,),
        ).fetchone()
    assert row is not None
    status, reason, message, ended_at = row
    assert (status, reason, message) == ("completed", "failed", "the core is shutting down")
    assert ISO_UTC.match(ended_at)


# --------------------------------------------------------------------------- logs


@pytest.fixture
def debug_core(tmp_path: Path) -> Iterator[tuple[dict[str, Any], Path, subprocess.Popen[str]]]:
    """``audin-core --sandbox --log-level debug --log-format json``, its stderr in a file.
    An account with an API key is created (``account create --sandbox``) before it starts."""
    data_dir = tmp_path / "data"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "softphone.server.cli",
            "account",
            "create",
            "Acme",
            "--number",
            "+15557770001",
            "--sandbox",
            "--data-dir",
            str(data_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    account = json.loads(made.stdout)
    log_file = tmp_path / "core.log"
    log = log_file.open("w")
    proc, info = start_core_process(
        data_dir, "--log-level", "debug", "--log-format", "json", log_level=None, stderr=log
    )
    try:
        info["account"] = account
        info["adminKey"] = (data_dir / "admin.key").read_text().strip()
        yield info, log_file, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        log.close()


async def test_a_whole_session_logs_no_secret_and_has_event_fields(
    debug_core: tuple[dict[str, Any], Path, subprocess.Popen[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    info, log_file, proc = debug_core
    url = info["coreUrl"]
    account = info["account"]
    api_key = account["apiKey"]
    caplog.set_level(logging.DEBUG)
    issued: list[str] = []

    async def backend_token() -> Any:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                url + "/v1/operator-sessions/token",
                headers={"X-API-Key": api_key},
                json={
                    "operatorRef": "alice",
                    "displayName": "Alice",
                    "phoneNumberIds": [account["numbers"][0]["id"]],
                    "ttlSeconds": 14,
                },
            )
            response.raise_for_status()
            body = response.json()
            issued.append(body["token"])
            return body

    # A sandbox operator (token URL) and an API-key operator whose token is renewed during
    # the session (update_token), a call with DTMF, an admin request and a refused key.
    sandbox_source = token_url_provider(url + "/sandbox/token")

    async def sandbox_token_recorded() -> Any:
        body = await sandbox_source()
        assert isinstance(body, dict)
        issued.append(body["token"])
        return body

    sandbox_op = Operator(url, sandbox_token_recorded, audio="null")
    operator = Operator(url, backend_token, audio="null", token_refresh_margin=12)
    events = EventLog(operator)
    renewed = asyncio.Event()
    operator.on("token_will_expire", lambda *_: renewed.set())
    try:
        await sandbox_op.go_online([LINE_A])
        sandbox_call = await sandbox_op.dial(ECHO)
        assert await sandbox_call.wait_started(10)
        await sandbox_call.send_dtmf("12")
        await sandbox_call.hangup()
        await operator.go_online([account["numbers"][0]["id"]])
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        async with asyncio.timeout(10):
            await renewed.wait()
        await wait_until(lambda: len(issued) >= 6, timeout=10)
        await call.hangup()
        await call.wait_ended(5)
        async with httpx.AsyncClient() as client:
            admin = await client.get(
                url + "/v1/admin/calls", headers={"X-Admin-Key": info["adminKey"]}
            )
            assert admin.status_code == 200
            refused = await client.post(
                url + "/v1/operator-sessions/token",
                headers={"X-API-Key": api_key[:-2] + "xx"},
                json={"operatorRef": "x", "displayName": "X"},
            )
            assert refused.status_code == 401
    finally:
        await operator.close()
        await sandbox_op.close()
    assert events.of("error") == []
    proc.terminate()
    assert await asyncio.to_thread(proc.wait, 10) == 0

    lines = log_file.read_text().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    text = log_file.read_text()
    # What the SDK's (and its libraries') handlers would write: the rendered messages.
    # (websockets' frame log shortens a frame to its first and last bytes, so an
    # update_token frame shows "eyJhb...<end of the signature>", never the token.)
    sdk_text = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    secrets_ = [api_key, api_key.split(".", 1)[1], info["adminKey"], *issued]
    assert len(issued) >= 6
    for secret in secrets_:
        assert secret not in text, "a secret is in the core's log"
        assert secret not in sdk_text, "a secret is in the SDK's log"

    # Structured fields of the important events.
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if "event" in record:
            by_event.setdefault(record["event"], []).append(record)
    token_issued = by_event["token_issued"]
    assert {(r["account"], r["operator"]) for r in token_issued} >= {
        (account["accountId"], "alice"),
        ("acct_sandbox", "sandbox-operator"),
    }
    online = by_event["operator_online"]
    assert {r["operator"] for r in online} == {"alice", "sandbox-operator"}
    assert all(r["session"].startswith("OS") for r in online)
    offline = by_event["operator_offline"]
    assert {r["operator"] for r in offline} == {"alice", "sandbox-operator"}
    assert all(r["reason"] for r in offline)
    media = by_event["media_open"]
    assert {r["call_sid"] for r in media} == {call.call_sid, sandbox_call.call_sid}
    closed = by_event["media_closed"]
    assert {r["call_sid"] for r in closed} == {call.call_sid, sandbox_call.call_sid}
    assert all(r["frames_in"] > 0 for r in closed)
    assert by_event["api_key_refused"][0]["client_ip"] == "127.0.0.1"
    assert by_event["core_started"][0]["url"] == url
    assert "core_stopping" in by_event
    levels = {r["level"] for r in records}
    assert "debug" in levels or "info" in levels
