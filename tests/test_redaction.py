"""Session tokens never reach logs, even with every logger at DEBUG."""

from __future__ import annotations

import logging

import pytest

from softphone.server import CoreServer

from .conftest import EventLog, sandbox_operator


async def test_no_token_in_debug_logs(core: CoreServer, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    operator = sandbox_operator(core.url)
    original = operator._get_token

    async def spy() -> object:
        result = await original()
        assert isinstance(result, dict)
        seen.append(result["token"])
        return result

    operator._get_token = spy  # type: ignore[method-assign]
    log = EventLog(operator)
    with caplog.at_level(logging.DEBUG):
        try:
            numbers = await operator.list_phone_numbers()
            await operator.go_online([numbers[0].id])
            call = await operator.dial("+15550100")
            assert await call.wait_started(10)
            # A token handed over on open sockets is logged as a frame by websockets.
            await operator.update_token(await spy())
            await call.hangup()
            await log.wait_for("call_ended")
        finally:
            await operator.close()
    assert seen, "no token was fetched"
    text = caplog.text
    assert "Authorization" in text or "authorization" in text.lower()  # headers were logged...
    assert "update_token" in text  # the frame was logged...
    args = " ".join(repr(r.args) for r in caplog.records)
    for token in seen:
        assert token not in text  # ...but never a token, in the message or its arguments
        assert token[20:60] not in text
        signature = token.rsplit(".", 1)[1]
        assert signature[-16:] not in text
        assert token not in args
        assert signature[-16:] not in args
