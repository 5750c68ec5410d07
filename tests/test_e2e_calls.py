"""End-to-end calls through a real audin-core on 127.0.0.1 (issue 2's acceptance tests)."""

from __future__ import annotations

import asyncio
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from softphone import CallState, EndReason, PresenceState
from softphone.media import FileAudioDevice
from softphone.server import CoreServer

from .conftest import CoreProcess, EventLog, sandbox_operator, wait_until

ECHO = "+15550100"
LINE_A = "+15550150"


def write_noise(path: Path, seconds: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = (rng.standard_normal(int(8000 * seconds)) * 4000).clip(-32768, 32767)
    data = samples.astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(data.tobytes())
    return data.astype(np.float64)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == 8000
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float64)


def find_delay(source: np.ndarray, recording: np.ndarray) -> tuple[int, float]:
    """Lag (samples) of ``source`` inside ``recording`` and the normalised correlation there."""
    n = len(source) + len(recording)
    corr = np.fft.irfft(np.fft.rfft(recording, n) * np.conj(np.fft.rfft(source, n)), n)
    lag = int(np.argmax(corr[: len(recording)]))
    segment = recording[lag : lag + len(source)]
    ref = source[: len(segment)]
    score = float(np.dot(segment, ref) / (np.linalg.norm(segment) * np.linalg.norm(ref) + 1e-9))
    return lag, score


async def test_echo_line_round_trip(core_process: CoreProcess, tmp_path: Path) -> None:
    """Noise streamed to the echo line comes back, < 250 ms later; hang-up is recorded."""
    play, record = tmp_path / "noise.wav", tmp_path / "echo.wav"
    source = write_noise(play, 2.0)
    device = FileAudioDevice(play, record)
    operator = sandbox_operator(core_process.url, audio=lambda _call: device)
    log = EventLog(operator)
    try:
        numbers = await operator.list_phone_numbers()
        line = next(n for n in numbers if n.phone_number == LINE_A)
        await operator.go_online([line.id])
        assert operator.state == PresenceState.ONLINE
        call = await operator.dial(ECHO, caller_id=LINE_A)
        assert await call.wait_started(10)
        assert call.state == CallState.ACTIVE
        # Keep the call up until the device clock is 300 ms past the end of the file, so the
        # echo of its last frame (delay budget 250 ms) is in the recording.
        await wait_until(lambda: device.ticks >= len(source) // 160 + 15, timeout=15)
        await call.hangup()
        ended = await log.wait_for("call_ended")
        assert ended is call
        assert call.end_reason == EndReason.HANGUP
    finally:
        await operator.close()

    recording = read_wav(record)
    lag, score = find_delay(source, recording)
    delay_ms = lag / 8.0
    assert score > 0.95, f"echo not found in the recording (correlation {score:.3f})"
    assert 0 < delay_ms < 250, f"round trip {delay_ms:.1f} ms"

    record_row = core_process.admin("call", call.call_sid)
    assert record_row.returncode == 0, record_row.stderr
    assert '"endReason": "hangup"' in record_row.stdout
    assert '"status": "completed"' in record_row.stdout


async def test_inbound_call_from_cli(core_process: CoreProcess) -> None:
    """`audin-core inbound` rings the operator; accept; the far end hangs up."""
    operator = sandbox_operator(core_process.url)
    log = EventLog(operator)
    try:
        numbers = await operator.list_phone_numbers()
        await operator.go_online([n.id for n in numbers if n.phone_number == LINE_A])
        placed = await asyncio.to_thread(
            core_process.admin, "inbound", "--to", LINE_A, "--from", "+15551230001"
        )
        assert placed.returncode == 0, placed.stderr
        assert '"offeredTo": 1' in placed.stdout
        call = await log.wait_for("incoming_call")
        assert call.state == CallState.PENDING
        assert (call.from_, call.to) == ("+15551230001", LINE_A)
        await call.accept()
        started = await log.wait_for("call_started")
        assert started is call
        assert call.state == CallState.ACTIVE
        hung = await asyncio.to_thread(core_process.admin, "hangup", call.call_sid)
        assert hung.returncode == 0, hung.stderr
        assert await log.wait_for("call_ended") is call
        assert call.end_reason == EndReason.REMOTE_HANGUP
    finally:
        await operator.close()


async def test_two_operators_one_number_taken_by_other(core: CoreServer) -> None:
    a, b = sandbox_operator(core.url, "op-a"), sandbox_operator(core.url, "op-b")
    log_a, log_b = EventLog(a), EventLog(b)
    try:
        await a.go_online(["pn_15550150"])
        await b.go_online(["pn_15550150"])
        sid, offered = await core.core.place_inbound("+15551230002", LINE_A, {})
        assert offered == 2
        call_a = await log_a.wait_for("incoming_call")
        call_b = await log_b.wait_for("incoming_call")
        assert call_a.call_sid == call_b.call_sid == sid
        await call_a.accept()
        await log_a.wait_for("call_started")
        assert await log_b.wait_for("call_ended") is call_b
        assert call_b.end_reason == EndReason.TAKEN_BY_OTHER
        assert call_a.state == CallState.ACTIVE
        assert not log_b.of("call_started")
        await call_a.hangup()
        await log_a.wait_for("call_ended")
        row = core.store.call(sid)
        assert row is not None
        assert (row.end_reason, row.operator_ref) == ("hangup", "op-a")
    finally:
        await a.close()
        await b.close()


async def test_reject_ends_call_for_everyone(core: CoreServer) -> None:
    a, b = sandbox_operator(core.url, "op-a"), sandbox_operator(core.url, "op-b")
    log_a, log_b = EventLog(a), EventLog(b)
    try:
        await a.go_online(["pn_15550150"])
        await b.go_online(["pn_15550150"])
        sid, _ = await core.core.place_inbound("+15551230003", LINE_A, {})
        call_a = await log_a.wait_for("incoming_call")
        call_b = await log_b.wait_for("incoming_call")
        await call_a.reject()
        assert call_a.end_reason == EndReason.REJECTED
        await log_b.wait_for("call_ended")
        assert call_b.end_reason == EndReason.CANCELLED
        row = core.store.call(sid)
        assert row is not None
        assert row.end_reason == "rejected"
    finally:
        await a.close()
        await b.close()


async def test_ignore_leaves_offer_to_others(core: CoreServer) -> None:
    a, b = sandbox_operator(core.url, "op-a"), sandbox_operator(core.url, "op-b")
    log_a, log_b = EventLog(a), EventLog(b)
    try:
        await a.go_online(["pn_15550150"])
        await b.go_online(["pn_15550150"])
        await core.core.place_inbound("+15551230004", LINE_A, {})
        call_a = await log_a.wait_for("incoming_call")
        call_b = await log_b.wait_for("incoming_call")
        await call_a.ignore()
        assert call_a.end_reason == EndReason.IGNORED
        await call_b.accept()
        await log_b.wait_for("call_started")
        assert len(log_a.of("call_ended")) == 1  # only the ignore; no second end later
        await call_b.hangup()
    finally:
        await a.close()
        await b.close()


async def test_busy_operator_declines_offer_automatically(core: CoreServer) -> None:
    a = sandbox_operator(core.url, "op-a")
    log = EventLog(a)
    try:
        await a.go_online(["pn_15550150", "pn_15550151"])
        call = await a.dial(ECHO)
        assert await call.wait_started(10)
        assert a.is_busy
        sid, offered = await core.core.place_inbound("+15551230005", "+15550151", {})
        assert offered == 1
        # The SDK answers the offer with reject(busy): the core drops this operator from it.
        await wait_until(lambda: not core.core.calls[sid].offered, timeout=5)
        assert not log.of("incoming_call")
        with pytest.raises(Exception, match="BUSY"):
            await a.dial(ECHO)
        await call.hangup()
    finally:
        await a.close()


async def test_unknown_destination_fails_with_reason(core: CoreServer) -> None:
    a = sandbox_operator(core.url)
    try:
        call = await a.dial("+15559990000")
        assert await call.wait_ended(10) == EndReason.FAILED
        assert "not reachable" in call.end_message
    finally:
        await a.close()


async def test_mute_sends_silence_and_dtmf_reaches_core(core: CoreServer, tmp_path: Path) -> None:
    play, record = tmp_path / "noise.wav", tmp_path / "echo.wav"
    write_noise(play, 3.0)
    device = FileAudioDevice(play, record)
    a = sandbox_operator(core.url, audio=lambda _c: device)
    try:
        call = await a.dial(ECHO)
        assert await call.wait_started(10)
        await call.mute(True)
        assert call.muted
        await call.send_dtmf("5")
        with pytest.raises(Exception, match="INVALID_DTMF"):
            await call.send_dtmf("5x")
        await wait_until(lambda: bool(core.core.calls[call.call_sid].dtmf), timeout=5)
        assert core.core.calls[call.call_sid].dtmf == ["5"]
        before = call.stats.frames_received
        await wait_until(lambda: call.stats.frames_received >= before + 25, timeout=5)
        await call.hangup()
    finally:
        await a.close()
    # The tail of the recording (after mute took effect and the echo came back) is silence.
    tail = read_wav(record)[-8000 // 4 :]
    assert np.abs(tail).max() == 0


async def test_presence_reconnects_after_core_drops_socket(core: CoreServer) -> None:
    a = sandbox_operator(core.url, reconnect_backoff=[0.05])
    log = EventLog(a)
    try:
        await a.go_online(["pn_15550150"])
        session = next(iter(core.core.sessions.values()))
        await session.peer.close(1011, "test cut")  # type: ignore[arg-type]
        await log.wait_for("presence_state_changed", count=4)
        states = [s.value for s in log.of("presence_state_changed")]
        assert states == ["connecting", "online", "reconnecting", "online"]
        assert [av.accepted for av in log.of("availability_changed")] == [
            ("pn_15550150",),
            ("pn_15550150",),
        ]
        new = next(iter(core.core.sessions.values()))
        assert new.availability == {"pn_15550150"}
    finally:
        await a.close()


def test_headless_call_command_json(tmp_path: Path) -> None:
    import json
    import subprocess

    play = tmp_path / "in.wav"
    write_noise(play, 1.0)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "softphone.cli",
            "call",
            ECHO,
            "--sandbox",
            "--play",
            str(play),
            "--record",
            str(tmp_path / "out.wav"),
            "--seconds",
            "1.5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["connected"] is True
    assert summary["endReason"] == "hangup"
    assert summary["framesReceived"] > 50
    assert (tmp_path / "out.wav").stat().st_size > 44


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["call", "12345", "--sandbox"], 2, "not an E.164 number"),
        (["call", ECHO], 2, "give --sandbox, or --core-url with --token-url or --token-command"),
        (["call", ECHO, "--sandbox", "--play", "/nonexistent.wav"], 2, "AUDIO_FILE_NOT_FOUND"),
        (
            [
                "call",
                ECHO,
                "--core-url",
                "http://127.0.0.1:9",
                "--token-url",
                "http://127.0.0.1:9/token",
            ],
            3,
            "TOKEN_FETCH_FAILED",
        ),
        (["call", "+15550104", "--sandbox", "--seconds", "1"], 1, "failed"),
    ],
)
def test_headless_call_command_errors(args: list[str], code: int, message: str) -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "softphone.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == code, (out.stdout, out.stderr)
    assert message in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


async def test_health_endpoint(core: CoreServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(core.url + "/v1/health")
    assert response.status_code == 200
    assert response.json()["protocol"] == 1


async def test_leaving_a_number_withdraws_its_ringing_offer(core: CoreServer) -> None:
    a = sandbox_operator(core.url, "op-a")
    log = EventLog(a)
    try:
        await a.go_online(["pn_15550150"])
        await core.core.place_inbound("+15551230006", LINE_A, {})
        call = await log.wait_for("incoming_call")
        await a.go_online(["pn_15550151"])
        assert await log.wait_for("call_ended") is call
        assert call.end_reason == EndReason.CANCELLED
        assert LINE_A in call.end_message
        # Coming back online on the number offers the still-ringing call again.
        await a.go_online(["pn_15550150"])
        again = await log.wait_for("incoming_call", count=2)
        assert again.call_sid == call.call_sid
        assert again is not call
    finally:
        await a.close()
