"""Fault scenarios between the SDK and a real core, injected by a TCP proxy on loopback
(tests/faultproxy.py): what the operator sees, how long recovery takes, what is lost.
docs/reliability.md lists them with their figures."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from softphone import CallState, EndReason, Operator, PresenceState
from softphone.engine import ClientErrorCode
from softphone.server import CoreConfig, CoreServer
from softphone.server.core import CoreTimings

from .conftest import EventLog, sandbox_operator, start_core_process, wait_until
from .faultproxy import FaultProxy

ECHO = "+15550100"
LINE_A = "+15550150"


@pytest.fixture
async def proxy(core: CoreServer) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(core.port).start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_presence_cut_back_on_the_same_numbers_no_duplicate_offer(
    core: CoreServer, proxy: FaultProxy
) -> None:
    operator = sandbox_operator(proxy.url)
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        proxy.cut()
        cut = time.monotonic()
        await log.wait_for("presence_state_changed", count=4, timeout=5)
        assert operator.state == PresenceState.ONLINE
        assert time.monotonic() - cut < 1.0 + 0.5  # the first backoff step, plus the handshake
        await wait_until(lambda: len(core.core.sessions) == 1, timeout=5)
        await core.core.place_inbound("+15551239001", LINE_A, {})
        offer = await log.wait_for("incoming_call")
        await offer.accept()
        assert await offer.wait_started(10)
        await offer.hangup()
        assert len(log.of("incoming_call")) == 1
        assert [a.accepted for a in log.of("availability_changed")] == [("pn_15550150",)] * 2
    finally:
        await operator.close()


async def test_half_open_link_is_detected_within_two_heartbeats(
    core: CoreServer, proxy: FaultProxy
) -> None:
    operator = sandbox_operator(proxy.url, heartbeat_interval=1.0, reconnect_backoff=[0.1])
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        proxy.half_open()  # the core sees the close; the SDK's socket just goes quiet
        started = time.monotonic()
        await log.wait_for("presence_state_changed", count=3, timeout=5)
        assert time.monotonic() - started <= 2.0 + 0.3
        await log.wait_for("presence_state_changed", count=4, timeout=5)
        assert operator.state == PresenceState.ONLINE
        assert [e.code for e in log.of("error")] == [ClientErrorCode.CONNECTION_LOST]
    finally:
        await operator.close()


async def test_media_leg_cut_mid_call_resumes_audio(core: CoreServer, proxy: FaultProxy) -> None:
    operator = sandbox_operator(proxy.url)
    events: list[str] = []
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        call.on("reconnecting", lambda: events.append("reconnecting"))
        call.on("reconnected", lambda: events.append("reconnected"))
        await wait_until(lambda: call.stats.frames_received > 10, timeout=5)
        proxy.cut()  # presence and media both drop
        cut = time.monotonic()
        await wait_until(lambda: "reconnected" in events, timeout=5)
        recovered = time.monotonic() - cut
        assert recovered < 1.5
        assert call.state == CallState.ACTIVE
        before = call.stats.frames_received
        await wait_until(lambda: call.stats.frames_received >= before + 50, timeout=5)
        await wait_until(lambda: operator.state == PresenceState.ONLINE, timeout=5)
        await call.hangup()
        row = core.store.call(call.call_sid)
        assert row is not None
        assert (row.status, row.end_reason) == ("completed", "hangup")
    finally:
        await operator.close()
    assert events == ["reconnecting", "reconnected"]


async def test_stalled_link_delivers_everything_after_the_stall(
    core: CoreServer, proxy: FaultProxy
) -> None:
    """A 1 s stall (shorter than two heartbeats): nothing reconnects, nothing is lost; the
    jitter buffer absorbs what arrives in a burst."""
    operator = sandbox_operator(proxy.url, heartbeat_interval=5.0)
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        changes: list[str] = []
        call.on("reconnecting", lambda: changes.append("reconnecting"))
        await wait_until(lambda: call.stats.frames_received > 20, timeout=5)
        proxy.stall(1.0)
        assert proxy.stalled
        await wait_until(lambda: not proxy.stalled, timeout=3)
        sent = call.stats.frames_sent
        await wait_until(lambda: call.stats.frames_received >= sent - 5, timeout=5)
        assert not changes
        assert operator.state == PresenceState.ONLINE
        assert call.state == CallState.ACTIVE
        await call.hangup()
    finally:
        await operator.close()
    assert not log.of("error")


async def test_slow_link_still_carries_the_call(core: CoreServer, proxy: FaultProxy) -> None:
    """80 ms each way (160 ms round trip): the call works; RTT shows it."""
    proxy.delay = 0.080
    operator = sandbox_operator(proxy.url)
    samples: list[float] = []
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        call.on("sample", lambda s: samples.append(s.rtt_ms or 0.0))
        await wait_until(lambda: len(samples) >= 3, timeout=10)
        assert call.stats.rtt_median_ms is not None
        assert 150 <= call.stats.rtt_median_ms <= 260
        assert not call.warnings  # 160 ms is below every threshold
        await call.hangup()
    finally:
        await operator.close()


async def test_inbound_offer_arriving_during_reconnection_rings_once_back(
    core: CoreServer, proxy: FaultProxy
) -> None:
    operator = sandbox_operator(proxy.url, reconnect_backoff=[0.5])
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        proxy.refuse = True
        proxy.cut()
        await log.wait_for("presence_state_changed", count=3, timeout=5)  # reconnecting
        await wait_until(lambda: not core.core.sessions, timeout=5)
        sid, offered = await core.core.place_inbound("+15551239002", LINE_A, {})
        assert offered == 0  # nobody online: it rings on the number
        proxy.refuse = False
        offer = await log.wait_for("incoming_call", timeout=10)
        assert offer.call_sid == sid
        await offer.accept()
        assert await offer.wait_started(10)
        await offer.hangup()
        assert len(log.of("incoming_call")) == 1
    finally:
        await operator.close()


async def test_get_token_failing_for_a_while_then_recovering(
    core: CoreServer, proxy: FaultProxy
) -> None:
    from .conftest import sandbox_token

    failing = False

    async def get_token() -> str:
        if failing:
            raise ConnectionError("token backend down")
        return await sandbox_token(core.url)

    operator = Operator(proxy.url, get_token, audio="null", reconnect_backoff=[0.2])
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        failing = True
        proxy.cut()
        await log.wait_for("error", count=3, timeout=5)  # CONNECTION_LOST, two token failures
        assert operator.state == PresenceState.RECONNECTING
        failing = False
        await wait_until(lambda: operator.state == PresenceState.ONLINE, timeout=5)
        codes = [e.code for e in log.of("error")]
        assert codes[0] == ClientErrorCode.CONNECTION_LOST
        assert set(codes[1:]) == {ClientErrorCode.TOKEN_FETCH_FAILED}
    finally:
        await operator.close()


async def test_core_restart(tmp_path: Path) -> None:
    """The core stops (gracefully) during a call and comes back on the same address: the
    call ends with a clear reason and a consistent record; both operators come back online
    on their numbers by themselves."""
    data_dir = tmp_path / "core"
    first = CoreServer(CoreConfig(data_dir=data_dir, port=0, sandbox=True, timings=CoreTimings()))
    await first.start()
    proxy = await FaultProxy(first.port).start()
    a = sandbox_operator(proxy.url, "op-a", reconnect_backoff=[0.2])
    b = sandbox_operator(proxy.url, "op-b", reconnect_backoff=[0.2])
    log_a, log_b = EventLog(a), EventLog(b)
    second: CoreServer | None = None
    try:
        await a.go_online(["pn_15550150"])
        await b.go_online(["pn_15550151"])
        call = await a.dial(ECHO)
        assert await call.wait_started(10)
        proxy.refuse = True
        await first.stop()
        stopped = time.monotonic()
        assert await call.wait_ended(5) == EndReason.FAILED
        assert "shutting down" in call.end_message
        second = CoreServer(
            CoreConfig(data_dir=data_dir, port=0, sandbox=True, timings=CoreTimings())
        )
        await second.start()
        proxy.target = ("127.0.0.1", second.port)
        proxy.refuse = False
        await wait_until(
            lambda: a.state == PresenceState.ONLINE and b.state == PresenceState.ONLINE, 10
        )
        recovered = time.monotonic() - stopped
        assert recovered < 5.0
        assert a.availability.accepted == ("pn_15550150",)
        assert b.availability.accepted == ("pn_15550151",)
        row = second.store.call(call.call_sid)
        assert row is not None
        assert (row.status, row.end_reason) == ("completed", "failed")
        assert row.ended_at is not None
        # The new core works: a fresh call.
        again = await a.dial(ECHO)
        assert await again.wait_started(10)
        await again.hangup()
        assert len(log_a.of("call_ended")) == 2
        assert not log_b.of("call_ended")
    finally:
        await a.close()
        await b.close()
        await proxy.close()
        if second is not None:
            await second.stop()


def _start_core(data_dir: Path, port: int = 0) -> tuple[subprocess.Popen[str], str]:
    proc, info = start_core_process(data_dir, port=port, stderr=subprocess.DEVNULL)
    url: str = info["coreUrl"]
    return proc, url


async def test_core_crash_and_restart(tmp_path: Path) -> None:
    """The core process is killed (SIGKILL) during a call and started again on the same port:
    the SDK ends the call ``failed`` once the media window runs out, comes back online by
    itself, and the new core has closed the orphaned call record on start-up."""
    data_dir = tmp_path / "core"
    proc, url = await asyncio.to_thread(_start_core, data_dir)
    port = int(url.rsplit(":", 1)[1])
    operator = sandbox_operator(url, reconnect_backoff=[0.3], media_reconnect_window=2.0)
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        proc.kill()
        await asyncio.to_thread(proc.wait)
        killed = time.monotonic()
        assert await call.wait_ended(6) == EndReason.FAILED
        assert time.monotonic() - killed < 3.5
        proc, _ = await asyncio.to_thread(_start_core, data_dir, port)
        await wait_until(lambda: operator.state == PresenceState.ONLINE, timeout=10)
        assert operator.availability.accepted == ("pn_15550150",)
        shown = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable, "-m", "softphone.server.cli", "call", call.call_sid,
                "--core-url", url, "--data-dir", str(data_dir), "--json",
            ],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        record = json.loads(shown.stdout)
        assert (record["status"], record["endReason"]) == ("completed", "failed")
        assert "restart" in record["endMessage"]
        assert [e.code for e in log.of("error")].count(ClientErrorCode.MEDIA_FAILED) == 1
    finally:
        await operator.close()
        proc.terminate()
        await asyncio.to_thread(proc.wait)


@pytest.mark.timeout(90)
async def test_throttled_link_raises_quality_warnings_that_clear(
    core: CoreServer, proxy: FaultProxy
) -> None:
    """A link throttled below the call's bit rate (4 kB/s for ~8.4 kB/s of frames each way):
    the call stays up, quality warnings are raised; when the link recovers they clear."""
    operator = sandbox_operator(proxy.url, heartbeat_interval=30.0)
    raised: list[str] = []
    cleared: list[str] = []
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        call.on("warning", raised.append)
        call.on("warning_cleared", cleared.append)
        await wait_until(lambda: call.duration >= 5.5, timeout=10)  # past the grace period
        proxy.throttle = 4000.0
        network = {"high-jitter", "high-rtt", "low-mos", "high-packet-loss", "low-bytes-received"}
        await wait_until(lambda: bool(set(raised) & network), timeout=20)
        assert call.state in (CallState.ACTIVE, CallState.RECONNECTING)
        proxy.throttle = None
        # (The silent test device also earns constant-audio-input-level: not a network one.)
        await wait_until(lambda: not (call.warnings & network), timeout=40)
        assert set(raised) & network <= set(cleared)
        assert call.state == CallState.ACTIVE
        await call.hangup()
    finally:
        await operator.close()
    assert set(raised) & {"high-jitter", "high-rtt", "low-mos", "low-bytes-received"}


async def test_silent_media_link_is_detected_and_reopened(
    core: CoreServer, proxy: FaultProxy
) -> None:
    """The call's link goes silent without closing: within ~3 s (no pong) the media leg is
    taken for dead and re-opened through a fresh connection; audio resumes."""
    operator = sandbox_operator(proxy.url, heartbeat_interval=30.0)
    events: list[str] = []
    try:
        await operator.go_online(["pn_15550150"])
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        call.on("reconnecting", lambda: events.append("reconnecting"))
        call.on("reconnected", lambda: events.append("reconnected"))
        await wait_until(lambda: call.stats.frames_received > 10, timeout=5)
        proxy.blackhole()
        silent = time.monotonic()
        await wait_until(lambda: "reconnected" in events, timeout=10)
        assert 2.5 <= time.monotonic() - silent <= 5.5
        before = call.stats.frames_received
        await wait_until(lambda: call.stats.frames_received >= before + 25, timeout=5)
        assert call.state == CallState.ACTIVE
    finally:
        await operator.close()
    assert events == ["reconnecting", "reconnected"]
