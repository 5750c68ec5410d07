"""Device-level and call accessors of the SDK against the real core."""

from __future__ import annotations

import logging

from softphone import CallState, EndReason, Operator, PresenceState
from softphone.server import CoreServer

from .conftest import EventLog, sandbox_operator


async def test_accessors_of_operator_and_call(core: CoreServer) -> None:
    operator = sandbox_operator(core.url, "op-7")
    try:
        assert operator.identity is None
        await operator.go_online(["pn_15550150"])
        assert operator.identity == "op-7"
        assert operator.account_id == "acct_sandbox"
        assert operator.home == core.url
        assert operator.token is not None
        assert "redacted" in operator.token
        operator.log_level = logging.DEBUG
        assert operator.log_level == logging.DEBUG
        call = await operator.dial("+15550100", params={"crmId": "42", "queue": "sales"})
        assert await call.wait_started(10)
        assert call.codec == "PCMU"
        assert call.custom_parameters == {"crmId": "42", "queue": "sales"}
        assert call.parameters == {
            "CallSid": call.call_sid,
            "From": "+15550150",
            "To": "+15550100",
            "Direction": "outbound",
            "AccountSid": "acct_sandbox",
        }
        row = core.store.call(call.call_sid)
        assert row is not None
        assert row.params == {"crmId": "42", "queue": "sales"}  # delivered to the core
        assert not call.is_muted
        await call.mute(True)
        assert call.is_muted
        assert operator.calls == [call]
        assert operator.is_busy
        await call.hangup()
    finally:
        await operator.close()
    assert operator.state == PresenceState.DESTROYED


async def test_disconnect_all_ends_calls_and_offers(core: CoreServer) -> None:
    a = sandbox_operator(core.url, "op-a")
    b = sandbox_operator(core.url, "op-b")
    log_b = EventLog(b)
    try:
        await b.go_online(["pn_15550150"])
        active = await b.dial("+15550100")
        assert await active.wait_started(10)
        await a.go_online(["pn_15550151"])
        await core.core.place_inbound("+15551230042", "+15550151", {})
        log_a = EventLog(a)
        offer = await log_a.wait_for("incoming_call")
        await a.disconnect_all()
        await b.disconnect_all()
        assert offer.state == CallState.ENDED
        assert offer.end_reason == EndReason.REJECTED
        assert active.end_reason == EndReason.HANGUP
        assert not b.is_busy
        assert b.state == PresenceState.ONLINE  # presence untouched
        assert len(log_b.of("call_ended")) == 1
    finally:
        await a.close()
        await b.close()


def test_is_supported_reports_the_sound_backend() -> None:
    assert Operator.is_supported() is True  # PyAudio is part of the install


async def test_feedback_is_stored_by_the_core_and_limited_to_own_calls(core: CoreServer) -> None:
    import pytest

    from softphone.engine import OperatorError

    a = sandbox_operator(core.url, "op-a")
    b = sandbox_operator(core.url, "op-b")
    try:
        call = await a.dial("+15550100")
        assert await call.wait_started(10)
        await call.hangup()
        await call.post_feedback(2, "choppy-audio")  # after the call, as operators do
        await call.post_feedback(4)
        assert core.store.feedback(call.call_sid) == [
            ("op-a", 2, "choppy-audio"),
            ("op-a", 4, None),
        ]
        for score, issue in ((0, None), (6, None), (3, "bad-vibes")):
            with pytest.raises(OperatorError) as bad:
                await call.post_feedback(score, issue)
            assert bad.value.code == "INVALID_FEEDBACK"
        # Another operator of the account cannot rate op-a's call.
        other = await b.dial("+15550100")
        assert await other.wait_started(10)
        from softphone.protocol import PostFeedback

        with pytest.raises(OperatorError) as refused:
            await b._request(PostFeedback(id="x1", call_sid=call.call_sid, score=1))
        assert refused.value.code == "FORBIDDEN"
        await other.hangup()
    finally:
        await a.close()
        await b.close()
    assert len(core.store.feedback(call.call_sid)) == 2


async def test_token_expiry_is_exposed_and_forgotten_offline(core: CoreServer) -> None:
    import httpx

    async def get_token() -> dict[str, str]:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                core.url + "/sandbox/token", json={"operatorRef": "op-1", "ttlSeconds": 600}
            )
        data: dict[str, str] = response.json()
        return data

    operator = Operator(core.url, get_token, audio="null")
    try:
        assert operator.token_expires_at is None
        await operator.go_online(["pn_15550150"])
        expires = operator.token_expires_at
        assert expires is not None
        from datetime import UTC, datetime

        left = (expires - datetime.now(UTC)).total_seconds()
        assert 590 < left <= 600
        await operator.go_offline()
        assert operator.token_expires_at is None
    finally:
        await operator.close()
