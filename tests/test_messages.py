"""DTMF sequences reach the far end (the echo line reports them) and call messages round
trip through the core."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from softphone.engine import OperatorError
from softphone.server import CoreServer

from .conftest import sandbox_operator


async def test_dtmf_sequence_reaches_the_echo_line(core: CoreServer) -> None:
    operator = sandbox_operator(core.url)
    heard: list[tuple[str, str]] = []
    got_all = asyncio.Event()

    def on_message(content: str, content_type: str) -> None:
        heard.append((content, content_type))
        if len(heard) == 5:
            got_all.set()

    try:
        call = await operator.dial("+15550100")
        call.on("message_received", on_message)
        assert await call.wait_started(10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await call.send_dtmf("12#w34")
        elapsed = loop.time() - started
        await asyncio.wait_for(got_all.wait(), 5)
        assert call.dtmf_sent == "12#34"
        await call.hangup()
    finally:
        await operator.close()
    assert heard == [(d, "application/dtmf") for d in "12#34"]
    # The core stored them with the call record.
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{core.url}/v1/admin/calls/{call.call_sid}",
            headers={"X-Admin-Key": core.admin_key},
        )
    assert response.json()["dtmf"] == "12#34"
    # Keypad pace: 4 gaps of 230 ms between digits, plus the 500 ms pause.
    assert elapsed >= 4 * 0.23 + 0.5 - 0.05


@pytest.mark.parametrize("bad", ["", "12x", "5 5", "w" * 65, "12#\n"])
async def test_invalid_dtmf_is_refused_before_anything_is_sent(core: CoreServer, bad: str) -> None:
    operator = sandbox_operator(core.url)
    try:
        call = await operator.dial("+15550100")
        assert await call.wait_started(10)
        with pytest.raises(OperatorError) as refused:
            await call.send_dtmf(bad)
        assert refused.value.code == "INVALID_DTMF"
        assert call.dtmf_sent == ""
        assert core.core.calls[call.call_sid].dtmf == []
        await call.hangup()
    finally:
        await operator.close()


async def test_messages_round_trip_through_the_core(core: CoreServer) -> None:
    operator = sandbox_operator(core.url)
    events: list[tuple[str, str, str]] = []
    echoed = asyncio.Event()

    def received(content: str, content_type: str) -> None:
        events.append(("received", content, content_type))
        echoed.set()

    try:
        call = await operator.dial("+15550100")
        call.on("message_sent", lambda c, t: events.append(("sent", c, t)))
        call.on("message_received", received)
        with pytest.raises(OperatorError) as early:
            await call.send_message("too early")  # not answered yet
        assert early.value.code == "INVALID_STATE"
        assert await call.wait_started(10)
        await call.send_message('{"ticket": 42}', "application/json")
        await asyncio.wait_for(echoed.wait(), 5)
        with pytest.raises(OperatorError) as bad:
            await call.send_message("x", "not a content type")
        assert bad.value.code == "MALFORMED_MESSAGE"
        with pytest.raises(OperatorError) as big:
            await call.send_message("x" * 5000)
        assert big.value.code == "MALFORMED_MESSAGE"
        await call.hangup()
    finally:
        await operator.close()
    # The echo travels on the media leg and the core's ack on presence: either may be first.
    assert sorted(events) == [
        ("received", '{"ticket": 42}', "application/json"),
        ("sent", '{"ticket": 42}', "application/json"),
    ]
