"""Abuse limits: token-issuance rate per API key and per address, WebSockets per token.

Unit tests of the token bucket use a fake clock; the rest runs a real core on 127.0.0.1
with small limits so that they are reached in a few requests.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest

from softphone.protocol import ErrorCode
from softphone.protocol.http import MAX_BODY_BYTES
from softphone.server import CoreConfig, CoreServer
from softphone.server.limits import (
    DEFAULT_CONNECTIONS_PER_TOKEN,
    DEFAULT_TOKEN_BURST,
    DEFAULT_TOKEN_RATE,
    ConnectionLimiter,
    RateLimiter,
)

from .conftest import EventLog, sandbox_core, sandbox_operator, sandbox_token, wait_until
from .test_security import (
    TOKEN_BODY,
    assert_error_body,
    hello,
    make_account,
    refused_upgrade,
    ws_connect,
)

ECHO = "+15550100"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- units


def test_defaults_are_the_documented_ones() -> None:
    assert (DEFAULT_TOKEN_RATE, DEFAULT_TOKEN_BURST, DEFAULT_CONNECTIONS_PER_TOKEN) == (10.0, 20, 4)
    config = CoreConfig(data_dir=Path("unused"))
    assert (config.token_rate, config.token_burst, config.max_connections_per_token) == (
        10.0,
        20,
        4,
    )


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10.0, burst=20, clock=clock)
    assert all(limiter.take("k") == 0 for _ in range(20))
    wait = limiter.take("k")
    assert wait == pytest.approx(0.1)
    assert limiter.take("other") == 0  # keys are independent
    clock.now += 0.05
    assert limiter.take("k") == pytest.approx(0.05)  # refused: nothing taken
    clock.now += 0.05
    assert limiter.take("k") == 0
    assert limiter.take("k") > 0
    # A long pause refills to the burst, not beyond.
    clock.now += 3600
    assert all(limiter.take("k") == 0 for _ in range(20))
    assert limiter.take("k") > 0


def test_wait_counts_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    assert limiter.wait("k") == 0
    assert len(limiter) == 0
    limiter.take("k")
    limiter.take("k")
    assert limiter.wait("k") == pytest.approx(1.0)
    assert limiter.wait("k") == pytest.approx(1.0)


def test_rate_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, max_keys=100)
    for i in range(1000):
        limiter.take(f"k{i}")
        assert len(limiter) <= 100
    # A busy key survives pruning while idle (refilled) ones go first.
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, max_keys=10)
    limiter.take("busy")
    limiter.take("busy")
    for i in range(9):
        limiter.take(f"idle{i}")
    clock.now += 10
    limiter.take("busy")
    limiter.take("busy")
    limiter.take("new")
    assert limiter.take("busy") > 0


def test_rate_limiter_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError, match="burst >= 1"):
        RateLimiter(rate=1, burst=0)
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimiter(0)


def test_connection_limiter() -> None:
    limiter = ConnectionLimiter(2)
    assert limiter.acquire("a")
    assert limiter.acquire("a")
    assert not limiter.acquire("a")
    assert limiter.acquire("b")
    limiter.release("a")
    assert limiter.count("a") == 1
    assert limiter.acquire("a")
    for _ in range(3):
        limiter.release("a")
    assert limiter.count("a") == 0
    assert len(limiter) == 1


# --------------------------------------------------------------------------- a real core


@pytest.fixture
async def limited_core(tmp_path: Path) -> AsyncIterator[CoreServer]:
    """A sandbox core with small limits: 3 token requests at once then 1 every 2 s, and 2
    WebSockets per token."""
    async with sandbox_core(
        tmp_path, token_rate=0.5, token_burst=3, max_connections_per_token=2
    ) as server:
        yield server


def assert_rate_limited(response: httpx.Response, max_wait: float) -> int:
    assert_error_body(response, 429, ErrorCode.RATE_LIMITED)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= math.ceil(max_wait)
    return retry_after


async def test_token_endpoint_limits_each_api_key(limited_core: CoreServer) -> None:
    core = limited_core
    first = make_account(core, "acct_test", [("pn_t1", "+15557770001")])
    second = make_account(core, "acct_other", [("pn_o1", "+15558880001")])
    other_body = {**TOKEN_BODY, "phoneNumberIds": ["pn_o1"]}
    async with httpx.AsyncClient(base_url=core.url) as client:

        async def issue(key: str, body: Mapping[str, object]) -> httpx.Response:
            return await client.post(
                "/v1/operator-sessions/token", headers={"X-API-Key": key}, json=body
            )

        for _ in range(3):
            assert (await issue(first.api_key, TOKEN_BODY)).status_code == 200
        refused = await issue(first.api_key, TOKEN_BODY)
        assert_rate_limited(refused, max_wait=2.0)
        assert set(refused.json()) == {"error"}
        assert first.api_key not in refused.text
        # Another key (another account) has its own budget.
        for _ in range(3):
            assert (await issue(second.api_key, other_body)).status_code == 200
        # A refused request did not consume budget: a bucket refills at 0.5/s, and the
        # limiter's own clock says when.
        limiter = core.token_limiter
        wait = limiter.wait(f"key:{first.key_id}")
        assert 0 < wait <= 2.0
        assert (await issue(first.api_key, TOKEN_BODY)).status_code == 429
        await wait_until(lambda: limiter.wait(f"key:{first.key_id}") == 0, timeout=3.0)
        assert (await issue(first.api_key, TOKEN_BODY)).status_code == 200
        assert (await issue(first.api_key, TOKEN_BODY)).status_code == 429


async def test_refused_api_keys_are_limited_per_address(limited_core: CoreServer) -> None:
    core = limited_core
    account = make_account(core, "acct_test", [("pn_t1", "+15557770001")])
    wrong = f"audin_{account.key_id}.{'A' * 43}"
    async with httpx.AsyncClient(base_url=core.url) as client:
        for _ in range(10):
            response = await client.post(
                "/v1/operator-sessions/token", headers={"X-API-Key": wrong}, json=TOKEN_BODY
            )
            assert_error_body(response, 401, ErrorCode.INVALID_API_KEY)
        response = await client.post(
            "/v1/operator-sessions/token", headers={"X-API-Key": wrong}, json=TOKEN_BODY
        )
        assert_rate_limited(response, max_wait=1.0)
        # While the address is refused, even the right key waits: guessing is throttled
        # without spending a key derivation per guess.
        response = await client.post(
            "/v1/operator-sessions/token",
            headers={"X-API-Key": account.api_key},
            json=TOKEN_BODY,
        )
        assert_rate_limited(response, max_wait=1.0)
        await wait_until(lambda: core.auth_failures.wait("127.0.0.1") == 0, timeout=3.0)
        response = await client.post(
            "/v1/operator-sessions/token",
            headers={"X-API-Key": account.api_key},
            json=TOKEN_BODY,
        )
        assert response.status_code == 200, response.text


async def test_sandbox_token_is_limited_per_address(limited_core: CoreServer) -> None:
    async with httpx.AsyncClient(base_url=limited_core.url) as client:
        statuses = [(await client.post("/sandbox/token")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        response = await client.post("/sandbox/token")
        assert_rate_limited(response, max_wait=2.0)


async def test_default_limits_allow_a_burst_of_20(core: CoreServer) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:
        responses = await asyncio.gather(*(client.post("/sandbox/token") for _ in range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        response = await client.post("/sandbox/token")
        assert_rate_limited(response, max_wait=0.1)
        assert response.headers["Retry-After"] == "1"


async def test_websockets_per_token_are_limited(limited_core: CoreServer) -> None:
    core = limited_core
    token = await sandbox_token(core.url, "op-1")
    async with ws_connect(core, token) as first, ws_connect(core, token) as second:
        for ws in (first, second):
            assert (await hello(ws))["type"] == "welcome"
        status, detail = await refused_upgrade(core, token)
        assert (status, detail["code"]) == (429, "TOO_MANY_CONNECTIONS")
        assert token not in detail["message"]
        # The same operator with a fresh token is not affected.
        fresh = await sandbox_token(core.url, "op-1")
        async with ws_connect(core, fresh) as third:
            assert (await hello(third))["type"] == "welcome"
        # A media leg counts too.
        await first.send(
            '{"type": "dial", "id": "d1", "to": "' + ECHO + '", "callerId": "+15550150"}'
        )
        created: dict[str, object] = {}
        while created.get("type") != "call_created":
            created = json.loads(await asyncio.wait_for(first.recv(), 3))
        status, detail = await refused_upgrade(core, token, f"/v1/calls/{created['callSid']}/media")
        assert (status, detail["code"]) == (429, "TOO_MANY_CONNECTIONS")
    # Closing sockets frees their slots.
    await wait_until(lambda: core.connections.count(_jti(core, token)) == 0, timeout=3.0)
    async with ws_connect(core, token) as again:
        assert (await hello(again))["type"] == "welcome"


def _jti(core: CoreServer, token: str) -> str:
    return core.tokens.verify(token).token_id


async def test_refused_upgrades_do_not_hold_slots(limited_core: CoreServer) -> None:
    """Upgrades refused before the socket opens (no hello, bad version) give their slot back."""
    core = limited_core
    token = await sandbox_token(core.url, "op-1")
    for _ in range(5):
        async with ws_connect(core, token) as ws:
            error = await hello(ws, protocol=2)
            assert error["code"] == "UNSUPPORTED_VERSION"
    await wait_until(lambda: core.connections.count(_jti(core, token)) == 0, timeout=3.0)
    assert len(core.connections) == 0


async def test_sdk_never_meets_the_connection_limit(tmp_path: Path) -> None:
    """The SDK fetches a fresh token for presence and for each media leg, so even a limit
    of one socket per token lets it go online and complete a call."""
    async with sandbox_core(tmp_path, max_connections_per_token=1) as server:
        operator = sandbox_operator(server.url)
        events = EventLog(operator)
        try:
            await operator.go_online(["pn_15550150"])
            call = await operator.dial(ECHO, caller_id="+15550150")
            assert await call.wait_started(10)
            await wait_until(lambda: call.stats.frames_received >= 10, timeout=5)
            await call.hangup()
            await call.wait_ended(5)
        finally:
            await operator.close()
    assert events.of("error") == []


async def test_message_size_limits_hold(core: CoreServer) -> None:
    """The limits that existed before (16 KiB text, 16 KiB bodies) still apply."""
    token = await sandbox_token(core.url)
    async with ws_connect(core, token) as ws:
        assert (await hello(ws))["type"] == "welcome"
        await ws.send('{"type": "ping", "ts": 1, "pad": "' + "x" * 17_000 + '"}')
        error = json.loads(await asyncio.wait_for(ws.recv(), 3))
        assert (error["type"], error["code"]) == ("error", "MESSAGE_TOO_LARGE")
    async with httpx.AsyncClient(base_url=core.url) as client:
        response = await client.post("/sandbox/token", content=b" " * (MAX_BODY_BYTES + 1))
        assert_error_body(response, 413, ErrorCode.MESSAGE_TOO_LARGE)
