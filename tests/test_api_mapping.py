"""Rows of the seed mapping table in docs/api.md that no other test file covers, each
against the real core on loopback. (tests/test_api_doc.py checks that every row of that
table names a test that exists.)"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from softphone import CallDirection, CallState, EndReason, PresenceState
from softphone.engine import ClientErrorCode, OperatorError
from softphone.server import CoreServer

from .conftest import EventLog, sandbox_core, sandbox_operator, sandbox_token, wait_until
from .faultproxy import FaultProxy

ECHO = "+15550100"
LINE_A = "+15550150"


async def test_heartbeat_detects_a_dead_link_within_two_intervals(core: CoreServer) -> None:
    """A link that goes silent without closing (through a proxy that swallows every byte) is
    declared dead two heartbeat intervals after the last thing heard, then re-established."""
    proxy = await FaultProxy(core.port).start()
    operator = sandbox_operator(proxy.url, heartbeat_interval=1.0, reconnect_backoff=[0.05])
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        proxy.blackhole()
        silent_at = time.monotonic()
        await log.wait_for("presence_state_changed", count=3, timeout=5)
        detected = time.monotonic() - silent_at
        assert operator.state == PresenceState.RECONNECTING
        # The last pong came at most one interval before the silence began.
        assert 1.0 <= detected <= 2.0 + 0.3, detected
        await log.wait_for("presence_state_changed", count=4, timeout=5)
        assert operator.state == PresenceState.ONLINE
        # The core, which hears nothing on the old link either, drops it after two of the
        # operator's intervals too; the new session holds the numbers.
        await wait_until(lambda: len(core.core.sessions) == 1, timeout=5)
        (session,) = core.core.sessions.values()
        assert session.availability == {"pn_15550150"}
    finally:
        await operator.close()
        await proxy.close()


async def test_event_subscription_on_once_off(core: CoreServer) -> None:
    operator = sandbox_operator(core.url)
    every: list[PresenceState] = []
    first: list[PresenceState] = []
    removed: list[PresenceState] = []
    async_seen: list[PresenceState] = []

    async def async_listener(state: PresenceState) -> None:
        await asyncio.sleep(0)
        async_seen.append(state)

    unsubscribe = operator.on("presence_state_changed", removed.append)
    operator.on("presence_state_changed", every.append)
    operator.once("presence_state_changed", first.append)
    operator.on("presence_state_changed", async_listener)
    unsubscribe()
    operator.off("presence_state_changed", async_listener)
    operator.on("presence_state_changed", async_listener)

    def broken(_state: PresenceState) -> None:
        raise RuntimeError("a listener bug")

    operator.on("presence_state_changed", broken)  # must not break the SDK
    try:
        await operator.go_online(["pn_15550150"])
        await operator.go_offline()
    finally:
        await operator.close()
    names = [s.value for s in every]
    assert names == ["connecting", "online", "offline", "destroyed"]
    assert [s.value for s in first] == ["connecting"]
    assert not removed
    assert [s.value for s in async_seen] == names  # awaited by close() before clearing


async def test_custom_logger_gets_the_sdk_logs_and_no_token(
    core: CoreServer, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("my-app.phone")
    operator = sandbox_operator(core.url, logger=logger)
    operator.log_level = logging.DEBUG
    try:
        with caplog.at_level(logging.DEBUG, logger="my-app.phone"):
            await operator.go_online(["pn_15550150"])
            token = await sandbox_token(core.url)
    finally:
        await operator.close()
    mine = [r for r in caplog.records if r.name == "my-app.phone"]
    assert any("presence online" in r.getMessage() for r in mine)
    assert any("token fetched" in r.getMessage() for r in mine)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token.split(".")[2] not in text  # no signature of any token in the logs
    assert operator._token is not None
    assert operator._token.token not in text


async def test_go_online_again_changes_the_number_set(core: CoreServer) -> None:
    operator = sandbox_operator(core.url)
    log = EventLog(operator)
    try:
        first = await operator.go_online(["pn_15550150"])
        assert first.accepted == ("pn_15550150",)
        second = await operator.go_online(["pn_15550151", "pn_nope"])
        assert second.accepted == ("pn_15550151",)
        assert second.rejected == ("pn_nope",)
        (session,) = core.core.sessions.values()
        assert session.availability == {"pn_15550151"}
        assert [s.value for s in log.of("presence_state_changed")] == ["connecting", "online"]
        # An inbound call on the number left behind no longer rings here.
        _, offered = await core.core.place_inbound("+15551230100", LINE_A, {})
        assert offered == 0
    finally:
        await operator.close()


async def test_go_offline_ends_the_call_offline_and_stops_reconnecting(core: CoreServer) -> None:
    operator = sandbox_operator(core.url, reconnect_backoff=[0.05])
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        await operator.go_offline()
        assert call.end_reason == EndReason.OFFLINE
        assert operator.state == PresenceState.OFFLINE
        assert not operator.is_busy
        assert operator.current_call is None
        row = core.store.call(call.call_sid)
        assert row is not None
        assert row.status == "completed"  # the core ended it too
        await asyncio.sleep(0.2)  # several backoff steps: nothing may reconnect
        assert not core.core.sessions
        assert [s.value for s in log.of("presence_state_changed")] == [
            "connecting",
            "online",
            "offline",
        ]
    finally:
        await operator.close()


async def test_outbound_call_accessors_and_events(core: CoreServer) -> None:
    operator = sandbox_operator(core.url)
    log = EventLog(operator)
    events: list[str] = []
    try:
        await operator.go_online(["pn_15550150"])
        assert operator.current_call is None
        call = await operator.dial(ECHO, caller_id=LINE_A)
        call.on("accepted", lambda: events.append("accepted"))
        call.on("disconnected", lambda: events.append("disconnected"))
        assert call.direction == CallDirection.OUTBOUND
        assert (call.from_, call.to) == (LINE_A, ECHO)
        assert call.call_sid.startswith("CA")
        assert call.state in (CallState.CONNECTING, CallState.RINGING)
        assert operator.current_call is call
        assert await call.wait_started(10)
        assert call.state == CallState.ACTIVE
        assert await log.wait_for("call_started") is call
        assert call.end_reason is None
        assert not call.muted
        await call.hangup()
        assert call.state == CallState.ENDED
        assert call.end_reason == EndReason.HANGUP
        assert await log.wait_for("call_ended") is call
        assert events == ["accepted", "disconnected"]
        assert operator.calls == []
    finally:
        await operator.close()


async def test_inbound_accept_and_reject_events(core: CoreServer) -> None:
    operator = sandbox_operator(core.url)
    log = EventLog(operator)
    events: list[str] = []
    try:
        await operator.go_online(["pn_15550150"])
        await core.core.place_inbound("+15551230101", LINE_A, {"ticket": "T-9"})
        call = await log.wait_for("incoming_call")
        assert call.state == CallState.PENDING
        assert call.direction == CallDirection.INBOUND
        assert call.custom_parameters == {"ticket": "T-9"}
        assert call.parameters["From"] == "+15551230101"
        assert operator.current_call is None  # pending is not current yet
        call.on("accepted", lambda: events.append("accepted"))
        await call.accept()
        assert await call.wait_started(10)
        assert events == ["accepted"]
        assert operator.current_call is call
        await call.hangup()

        await core.core.place_inbound("+15551230102", LINE_A, {})
        second = await log.wait_for("incoming_call", count=2)
        second.on("rejected", lambda: events.append("rejected"))
        second.on("disconnected", lambda: events.append("disconnected"))
        await second.reject()
        assert second.end_reason == EndReason.REJECTED
        assert events == ["accepted", "rejected", "disconnected"]
        await second.accept()  # no-op once ended
        assert second.state == CallState.ENDED
    finally:
        await operator.close()


async def test_ignore_emits_cancelled_and_the_core_keeps_ringing(core: CoreServer) -> None:
    operator = sandbox_operator(core.url)
    log = EventLog(operator)
    events: list[str] = []
    try:
        await operator.go_online(["pn_15550150"])
        sid, _ = await core.core.place_inbound("+15551230103", LINE_A, {})
        call = await log.wait_for("incoming_call")
        call.on("cancelled", lambda: events.append("cancelled"))
        await call.ignore()
        assert call.end_reason == EndReason.IGNORED
        assert events == ["cancelled"]
        assert core.core.calls[sid].status.value == "ringing"  # no hangup was sent
    finally:
        await operator.close()


async def test_precise_error_codes(core: CoreServer) -> None:
    """The seed's enableImprovedSignalingErrorPrecision is how this SDK always works: each
    refusal carries its own stable code."""
    operator = sandbox_operator(core.url)
    try:
        await operator.go_online(["pn_15550150"])
        with pytest.raises(OperatorError) as bad_number:
            await operator.dial("5550100")
        assert bad_number.value.code == "INVALID_NUMBER"
        with pytest.raises(OperatorError) as not_mine:
            await operator.dial(ECHO, caller_id="+15557770000")
        assert not_mine.value.code == "CALLER_ID_NOT_ALLOWED"
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        with pytest.raises(OperatorError) as busy:
            await operator.dial(ECHO)
        assert busy.value.code == "BUSY"
        with pytest.raises(OperatorError) as dtmf:
            await call.send_dtmf("12x")
        assert dtmf.value.code == ClientErrorCode.INVALID_DTMF
        with pytest.raises(OperatorError) as feedback:
            await call.post_feedback(6)
        assert feedback.value.code == ClientErrorCode.INVALID_FEEDBACK
        await call.hangup()
        with pytest.raises(OperatorError) as late:
            await call.send_message("too late")
        assert late.value.code == ClientErrorCode.INVALID_STATE
    finally:
        await operator.close()
    with pytest.raises(OperatorError) as closed:
        await operator.dial(ECHO)
    assert closed.value.code == ClientErrorCode.DESTROYED


async def test_list_phone_numbers_when_the_core_is_down_is_request_failed(
    core: CoreServer,
) -> None:
    proxy = await FaultProxy(core.port).start()
    token: dict[str, Any] = {"token": await sandbox_token(core.url)}

    async def get_token() -> dict[str, Any]:
        return token

    from softphone import Operator

    operator = Operator(proxy.url, get_token, audio="null", request_timeout=2.0)
    try:
        assert [n.id for n in await operator.list_phone_numbers()] == [
            "pn_15550150",
            "pn_15550151",
        ]
        proxy.refuse = True
        with pytest.raises(OperatorError) as down:
            await operator.list_phone_numbers()
        assert down.value.code == ClientErrorCode.REQUEST_FAILED
    finally:
        await operator.close()
        await proxy.close()


async def test_a_hanging_get_token_fails_in_time_and_is_retried(core: CoreServer) -> None:
    """A token backend that never answers gives TOKEN_FETCH_FAILED after request_timeout
    (no hang); presence keeps retrying on its backoff and comes back once tokens flow."""
    release = asyncio.Event()
    hang = True

    async def get_token() -> str:
        if hang:
            await release.wait()  # never set: the backend hangs
        return await sandbox_token(core.url)

    from softphone import Operator

    operator = Operator(
        core.url, get_token, audio="null", request_timeout=0.5, reconnect_backoff=[0.1]
    )
    log = EventLog(operator)
    try:
        started = time.monotonic()
        with pytest.raises(OperatorError) as failed:
            await operator.go_online(["pn_15550150"])
        assert failed.value.code == ClientErrorCode.TOKEN_FETCH_FAILED
        assert time.monotonic() - started < 2.0
        assert operator.state == PresenceState.OFFLINE
        assert [e.code for e in log.of("error")] == [ClientErrorCode.TOKEN_FETCH_FAILED]
        # Online, then the backend hangs during a reconnect: retried until it answers again.
        hang = False
        await operator.go_online(["pn_15550150"])
        hang = True
        (session,) = core.core.sessions.values()
        await session.peer.close(1011, "cut")  # type: ignore[arg-type]
        await log.wait_for("error", count=3, timeout=5)  # CONNECTION_LOST, then a token failure
        assert operator.state == PresenceState.RECONNECTING
        hang = False
        await log.wait_for("presence_state_changed", count=6, timeout=5)
        assert operator.state == PresenceState.ONLINE
        codes = [e.code for e in log.of("error")]
        assert codes[:3] == [
            ClientErrorCode.TOKEN_FETCH_FAILED,
            ClientErrorCode.CONNECTION_LOST,
            ClientErrorCode.TOKEN_FETCH_FAILED,
        ]
        assert set(codes[3:]) <= {ClientErrorCode.TOKEN_FETCH_FAILED}
    finally:
        release.set()
        await operator.close()


@pytest.fixture
async def ringing_core(tmp_path: Any) -> Any:
    """A sandbox core whose lines ring for a short, known time."""
    from softphone.server.core import CoreTimings

    timings = CoreTimings(echo_ring=0.6, ring=0.6, no_answer_timeout=30.0)
    async with sandbox_core(tmp_path, timings=timings) as server:
        yield server


async def test_call_states_of_an_outbound_call_that_rings(ringing_core: CoreServer) -> None:
    """connecting -> ringing (far end alerted, no early media: local ringback) -> active ->
    ended; the seed's status() names are pending/connecting/ringing/open/closed."""
    operator = sandbox_operator(ringing_core.url)
    seen: list[str] = []
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial(ECHO)
        seen.append(call.state.value)
        rang = asyncio.Event()

        def on_ringing(early: bool) -> None:
            seen.append(f"ringing event early={early}")
            seen.append(call.state.value)
            rang.set()

        call.on("ringing", on_ringing)
        call.on("accepted", lambda: seen.append(call.state.value))
        call.on("disconnected", lambda: seen.append(call.state.value))
        async with asyncio.timeout(5):
            await rang.wait()
        rang_at = time.monotonic()
        assert await call.wait_started(5)
        assert time.monotonic() - rang_at >= 0.4  # it rang for the line's ring time
        await call.hangup()
    finally:
        await operator.close()
    assert seen == [
        "connecting",
        "ringing event early=False",
        "ringing",
        "active",
        "ended",
    ]


async def test_hanging_up_before_the_answer_cancels(ringing_core: CoreServer) -> None:
    operator = sandbox_operator(ringing_core.url)
    log = EventLog(operator)
    events: list[str] = []
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial("+15550103")  # the no-answer line: rings 30 s
        rang = asyncio.Event()
        call.on("ringing", lambda _early: rang.set())
        call.on("cancelled", lambda: events.append("cancelled"))
        call.on("disconnected", lambda: events.append("disconnected"))
        async with asyncio.timeout(5):
            await rang.wait()
        await call.hangup()
        assert call.end_reason == EndReason.CANCELLED
        assert events == ["cancelled", "disconnected"]
        assert await log.wait_for("call_ended") is call
        row = ringing_core.store.call(call.call_sid)
        assert row is not None
        assert row.status == "completed"
        assert row.answered_at is None
    finally:
        await operator.close()
