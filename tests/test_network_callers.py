"""The sandbox's caller generator: simulated inbound calls, switched over HTTP (the
operator's own token or the admin key), from ``audin-core callers`` and at start-up with
``audin-core --sandbox --caller-generator``; and the help texts that describe it."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from softphone import CallState, EndReason
from softphone.protocol import http as api
from softphone.protocol import validate_e164
from softphone.server import CoreConfig, CoreServer
from softphone.server.auth import utc_iso
from softphone.server.callers import MAX_UNFINISHED, ORIGIN_PARAMS, random_caller_number
from softphone.server.timings import CoreTimings

from .conftest import (
    CoreProcess,
    EventLog,
    sandbox_core,
    sandbox_operator,
    sandbox_token,
    start_core_process,
    stop_core_process,
    wait_until,
)

LINE_A, LINE_B = "+15550150", "+15550151"
FAST = CoreTimings(echo_ring=0.05, ring=0.3, speech_pause=0.2, speech_plays=1)
NANP = re.compile(r"^\+1[2-9][0-8][0-9][2-9][0-9]{6}$")


@pytest.fixture
async def seeded_core(tmp_path: Path) -> AsyncIterator[CoreServer]:
    """A sandbox core with a seeded caller generator, off until switched on."""
    async with sandbox_core(
        tmp_path, timings=FAST, caller_interval=0.2, caller_seed=1234
    ) as server:
        yield server


def error_of(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["error"]
    return response.status_code, detail["code"]


# ---------------------------------------------------------------------- the generator


def test_random_callers_look_real_and_are_reproducible() -> None:
    first = [random_caller_number(random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1, "the same seed gives the same caller"
    rng = random.Random(99)
    numbers = [random_caller_number(rng) for _ in range(500)]
    for number in numbers:
        assert validate_e164(number) == number
        assert NANP.match(number), number
        assert number[5:8] != "555", number
        assert number[3:5] != "11", number
    assert len(set(numbers)) > 490


async def test_generator_rings_a_free_operator_and_is_switched_off_over_http(
    seeded_core: CoreServer,
) -> None:
    operator = sandbox_operator(seeded_core.url)
    log = EventLog(operator)
    url = seeded_core.url + api.CALLER_GENERATOR_PATH
    try:
        await operator.go_online(["pn_15550150"])
        token = await sandbox_token(seeded_core.url)
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=auth) as client:
            off = await client.get(url)
            assert off.status_code == 200
            assert off.json() == {
                "enabled": False,
                "meanIntervalSeconds": 0.2,
                "numbers": [LINE_A, LINE_B],
                "callsPlaced": 0,
            }
            on = await client.put(url, json={"enabled": True, "meanIntervalSeconds": 0.25})
            assert on.status_code == 200
            assert on.json()["enabled"] is True
            assert on.json()["meanIntervalSeconds"] == 0.25

            call = await log.wait_for("incoming_call", timeout=10)
            assert call.to == LINE_A, "only the number the operator is online on is called"
            assert NANP.match(call.from_)
            assert call.params == ORIGIN_PARAMS
            await call.accept()
            assert await call.wait_started(10)
            # The generated caller talks: its recording arrives.
            await wait_until(lambda: call.stats.frames_received >= 25, timeout=10)
            await call.hangup()
            assert call.end_reason == EndReason.HANGUP

            stopped = await client.put(url, json={"enabled": False})
            assert stopped.status_code == 200
            state = stopped.json()
            assert state["enabled"] is False
            assert state["callsPlaced"] >= 1
            assert (await client.get(url)).json() == state
        # Off means off: at a mean interval of 0.25 s, 2 s would bring about 8 calls.
        placed = seeded_core.callers.calls_placed
        with pytest.raises(TimeoutError):
            await wait_until(lambda: seeded_core.callers.calls_placed > placed, timeout=2.0)
    finally:
        await operator.close()


async def test_generator_waits_while_nobody_is_free(seeded_core: CoreServer) -> None:
    """No operator online, then one on a call: no call is placed; free again: calls come."""
    await seeded_core.callers.configure(enabled=True, mean_interval=0.1)
    operator = sandbox_operator(seeded_core.url)
    log = EventLog(operator)
    try:
        assert await seeded_core.callers.place_call() is None  # nobody online
        call = await operator.dial("+15550100")
        assert await call.wait_started(10)
        await operator.go_online(["pn_15550151"])
        assert await seeded_core.callers.place_call() is None  # online but busy
        assert seeded_core.callers.calls_placed == 0
        await call.hangup()
        offered = await log.wait_for("incoming_call", timeout=10)
        assert offered.to == LINE_B
        assert offered.state == CallState.PENDING
    finally:
        await operator.close()
        await seeded_core.callers.configure(enabled=False)


async def test_generator_keeps_at_most_a_few_calls_unanswered(seeded_core: CoreServer) -> None:
    operator = sandbox_operator(seeded_core.url)
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        sids = [await seeded_core.callers.place_call() for _ in range(MAX_UNFINISHED + 2)]
        assert all(sids[:MAX_UNFINISHED])
        assert sids[MAX_UNFINISHED:] == [None, None]
        await log.wait_for("incoming_call", count=MAX_UNFINISHED)
        first = log.of("incoming_call")[0]
        await first.reject()
        assert await seeded_core.callers.place_call() is not None
    finally:
        await operator.close()


# ---------------------------------------------------------------------- HTTP refusals


async def test_http_switch_refuses_missing_tokens_and_other_accounts(
    seeded_core: CoreServer,
) -> None:
    url = seeded_core.url + api.CALLER_GENERATOR_PATH
    store = seeded_core.store
    store.create_account("ACother0000000000", "Other", utc_iso(time.time()))
    other, _ = seeded_core.tokens.issue(
        account_id="ACother0000000000",
        operator_ref="mallory",
        display_name="Mallory",
        phone_number_ids=(),
        ttl=60,
    )
    sandbox = await sandbox_token(seeded_core.url)
    async with httpx.AsyncClient() as client:
        assert error_of(await client.get(url)) == (401, "AUTH_REQUIRED")
        assert error_of(await client.put(url, json={"enabled": True})) == (401, "AUTH_REQUIRED")
        bad = {"Authorization": "Bearer not-a-token"}
        assert error_of(await client.put(url, json={"enabled": True}, headers=bad)) == (
            401,
            "TOKEN_INVALID",
        )
        foreign = {"Authorization": f"Bearer {other}"}
        refused = await client.put(url, json={"enabled": True}, headers=foreign)
        assert error_of(refused) == (403, "FORBIDDEN")
        assert "sandbox account" in refused.json()["error"]["message"]
        assert error_of(await client.get(url, headers=foreign)) == (403, "FORBIDDEN")
        mine = {"Authorization": f"Bearer {sandbox}"}
        for body in ({}, {"enabled": "yes"}, {"enabled": True, "meanIntervalSeconds": 0}):
            answer = await client.put(url, json=body, headers=mine)
            assert error_of(answer) == (400, "BAD_REQUEST"), body
        admin_url = seeded_core.url + api.ADMIN_CALLER_GENERATOR_PATH
        assert error_of(await client.get(admin_url)) == (403, "FORBIDDEN")
        assert error_of(await client.get(admin_url, headers=mine)) == (403, "FORBIDDEN")
        ok = await client.get(admin_url, headers={"X-Admin-Key": seeded_core.admin_key})
        assert ok.status_code == 200
    assert not seeded_core.callers.enabled


async def test_production_core_has_no_caller_generator(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sandbox"):
        CoreServer(CoreConfig(data_dir=tmp_path / "bad", port=0, caller_generator=True))
    async with (
        CoreServer(CoreConfig(data_dir=tmp_path / "prod", port=0)) as server,
        httpx.AsyncClient() as client,
    ):
        answer = await client.put(
            server.url + api.ADMIN_CALLER_GENERATOR_PATH,
            json={"enabled": True},
            headers={"X-Admin-Key": server.admin_key},
        )
    assert error_of(answer) == (404, "NOT_FOUND")
    assert "--sandbox" in answer.json()["error"]["message"]


# ---------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softphone.server.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@contextmanager
def running_core(data_dir: Path, *args: str) -> Iterator[dict[str, Any]]:
    """``audin-core --sandbox ARGS`` as a separate process; yields its start-up JSON."""
    proc, info = start_core_process(data_dir, *args)
    try:
        yield info
    finally:
        stop_core_process(proc)


async def test_callers_subcommand_switches_a_running_core(core_process: CoreProcess) -> None:
    status = await asyncio.to_thread(core_process.admin, "callers", "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["enabled"] is False
    assert core_process.info["callerGenerator"]["enabled"] is False
    operator = sandbox_operator(core_process.url)
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550151"])
        on = await asyncio.to_thread(core_process.admin, "callers", "on", "--interval", "0.2")
        assert on.returncode == 0, on.stderr
        assert json.loads(on.stdout)["enabled"] is True
        assert json.loads(on.stdout)["meanIntervalSeconds"] == 0.2
        call = await log.wait_for("incoming_call", timeout=15)
        assert call.to == LINE_B
        assert call.params == ORIGIN_PARAMS
        off = await asyncio.to_thread(core_process.admin, "callers", "off")
        assert off.returncode == 0, off.stderr
        state = json.loads(off.stdout)
        assert state["enabled"] is False
        assert state["callsPlaced"] >= 1
        again = await asyncio.to_thread(core_process.admin, "callers", "status")
        assert json.loads(again.stdout) == state
    finally:
        await operator.close()
    bad = await asyncio.to_thread(core_process.admin, "callers", "on", "--interval", "0")
    assert bad.returncode == 2
    assert "--interval must be" in bad.stderr


async def test_serve_flag_starts_the_generator(tmp_path: Path) -> None:
    with running_core(
        tmp_path / "gen", "--caller-generator", "--caller-interval", "0.2", "--caller-seed", "5"
    ) as info:
        assert info["callerGenerator"] == {"enabled": True, "meanIntervalSeconds": 0.2}
        operator = sandbox_operator(info["coreUrl"])
        log = EventLog(operator)
        try:
            await operator.go_online(["pn_15550150"])
            call = await log.wait_for("incoming_call", timeout=15)
            assert call.to == LINE_A
            token = await sandbox_token(info["coreUrl"])
            async with httpx.AsyncClient() as client:
                state = await client.get(
                    info["coreUrl"] + api.CALLER_GENERATOR_PATH,
                    headers={"Authorization": f"Bearer {token}"},
                )
            assert state.json()["enabled"] is True
            assert state.json()["callsPlaced"] >= 1
        finally:
            await operator.close()


def test_serve_flag_needs_sandbox_and_a_sane_interval() -> None:
    alone = _cli("--caller-generator", "--port", "0")
    assert alone.returncode == 2
    assert "--caller-generator needs --sandbox" in alone.stderr
    fast = _cli("--sandbox", "--caller-interval", "0.01", "--port", "0")
    assert fast.returncode == 2
    assert "--caller-interval must be" in fast.stderr


def test_help_describes_the_network_and_the_callers_command() -> None:
    top = _cli("--help")
    assert top.returncode == 0
    for text in (
        "--caller-generator",
        "audin-core callers on|off|status",
        "+15550101 IVR",
        "application/x-ivr-digits",
        "+15550103 no-answer line",
        api.CALLER_GENERATOR_PATH,
    ):
        assert text in top.stdout, text
    sub = _cli("callers", "--help")
    assert sub.returncode == 0
    assert "{on,off,status}" in sub.stdout
    assert "--interval" in sub.stdout


def test_protocol_doc_lists_the_new_endpoints() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    for method in ("GET", "PUT"):
        for path in (api.CALLER_GENERATOR_PATH, api.ADMIN_CALLER_GENERATOR_PATH):
            assert f"| {method} | `{path}` |" in doc, (method, path)
    sandbox_doc = Path(__file__).resolve().parent.parent / "docs" / "sandbox.md"
    assert api.CALLER_GENERATOR_PATH in sandbox_doc.read_text()
