"""The simulated telephone network of the sandbox core (docs/sandbox.md), through the SDK.

Every destination is dialled by a real Operator against a real core on 127.0.0.1. The
fixture ``fast_core`` shortens the network's delays (CoreTimings) so each test takes
seconds; ``default_core`` has the defaults.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from softphone import EndReason
from softphone.media import FileAudioDevice
from softphone.media.g711 import decode_alaw, decode_mulaw, encode_alaw, encode_mulaw
from softphone.server import CoreConfig, CoreServer
from softphone.server.network import (
    BUSY_MESSAGE,
    FAILING_MESSAGE,
    IVR_DIGITS_CONTENT_TYPE,
)
from softphone.server.playout import Playout
from softphone.server.timings import CoreTimings
from softphone.server.voices import Voices

from .conftest import EventLog, sandbox_core, sandbox_operator, wait_until

ECHO, IVR, BUSY, NO_ANSWER, FAILING, SPEECH = (f"+155501{n:02d}" for n in range(6))

FAST = CoreTimings(
    echo_ring=0.05,
    ring=0.6,
    busy_delay=0.1,
    no_answer_timeout=0.8,
    ivr_digit_timeout=0.6,
    speech_pause=0.3,
    speech_plays=1,
)
VOICES = Voices.load()


@pytest.fixture
async def default_core(tmp_path: Path) -> AsyncIterator[CoreServer]:
    """A sandbox core with the default timings (what ``audin-core --sandbox`` runs)."""
    server = CoreServer(CoreConfig(data_dir=tmp_path / "default-core", port=0, sandbox=True))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def fast_core(tmp_path: Path) -> AsyncIterator[CoreServer]:
    """A sandbox core whose network rings, declines and times out quickly."""
    async with sandbox_core(tmp_path, timings=FAST) as server:
        yield server


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == 8000
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float64)


def through_g711(samples: np.ndarray, codec: str) -> np.ndarray:
    """What ``samples`` sound like after the codec (the far end's audio as the SDK hears it)."""
    pcm = samples.astype(np.int16)
    if codec == "PCMA":
        return decode_alaw(encode_alaw(pcm)).astype(np.float64)
    return decode_mulaw(encode_mulaw(pcm)).astype(np.float64)


def find(clip: np.ndarray, recording: np.ndarray) -> tuple[int, float]:
    """Lag (samples) of ``clip`` inside ``recording`` and the normalised correlation there."""
    n = len(clip) + len(recording)
    corr = np.fft.irfft(np.fft.rfft(recording, n) * np.conj(np.fft.rfft(clip, n)), n)
    lag = int(np.argmax(corr[: len(recording)]))
    segment = recording[lag : lag + len(clip)]
    ref = clip[: len(segment)]
    score = float(np.dot(segment, ref) / (np.linalg.norm(segment) * np.linalg.norm(ref) + 1e-9))
    return lag, score


def locate_in_order(
    parts: list[np.ndarray], recording: np.ndarray, slack: int = 2400
) -> list[float]:
    """Correlation of each of ``parts`` in ``recording``: the first searched anywhere, each
    next one within ``slack`` samples of where the previous one ended. Part by part, so a
    frame the playout buffer inserted or dropped between two parts costs nothing."""
    scores: list[float] = []
    lag, score = find(parts[0], recording)
    scores.append(score)
    end = lag + len(parts[0])
    for part in parts[1:]:
        start = max(0, end - slack)
        window = recording[start : end + len(part) + slack]
        lag, score = find(part, window)
        scores.append(score)
        end = start + lag + len(part)
    return scores


def chunks(samples: np.ndarray, size: int = 4000) -> list[np.ndarray]:
    return [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def test_echo_line_rings_before_answering(default_core: CoreServer) -> None:
    """Default timings: call_ringing (no early media), then the answer echo_ring s later."""
    loop = asyncio.get_running_loop()
    operator = sandbox_operator(default_core.url)
    events: list[tuple[str, object, float]] = []
    operator.on("call_started", lambda call: events.append(("started", None, loop.time())))
    try:
        call = await operator.dial(ECHO)
        call.on("ringing", lambda early: events.append(("ringing", early, loop.time())))
        assert await call.wait_started(10)
        await call.hangup()
    finally:
        await operator.close()
    assert [e[:2] for e in events] == [("ringing", False), ("started", None)]
    assert events[1][2] - events[0][2] >= CoreTimings().echo_ring - 0.05
    assert call.end_reason == EndReason.HANGUP


async def test_ivr_reads_back_digits_and_sends_them_as_a_message(
    fast_core: CoreServer, tmp_path: Path
) -> None:
    """Early-media ringback, the spoken menu, "123#" -> call_message + spoken readback."""
    record = tmp_path / "ivr.wav"
    device = FileAudioDevice(None, record)
    operator = sandbox_operator(fast_core.url, audio=lambda _call: device)
    rang: list[bool] = []
    frames_at_answer: list[int] = []
    messages: list[tuple[str, str, int]] = []
    got = asyncio.Event()

    def on_message(content: str, content_type: str) -> None:
        messages.append((content, content_type, device.ticks))
        got.set()

    readback = VOICES.readback("123")
    try:
        call = await operator.dial(IVR)
        call.on("ringing", rang.append)
        call.on("accepted", lambda: frames_at_answer.append(call.stats.frames_received))
        call.on("message_received", on_message)
        assert await call.wait_started(10)
        assert rang == [True]
        # 0.6 s of ringing is 30 frames of early media; allow for a loaded machine.
        assert frames_at_answer[0] >= 10
        answered_tick = device.ticks
        await wait_until(lambda: device.ticks >= answered_tick + 50, timeout=10)
        dtmf_tick = device.ticks
        await call.send_dtmf("123#")
        await asyncio.wait_for(got.wait(), 5)
        message_tick = messages[0][2]
        frames = len(readback) // 160
        await wait_until(lambda: device.ticks >= message_tick + frames + 25, timeout=15)
        await call.hangup()
    finally:
        await operator.close()
    assert [m[:2] for m in messages] == [("123", IVR_DIGITS_CONTENT_TYPE)]
    recording = read_wav(record)
    menu = recording[answered_tick * 160 : dtmf_tick * 160]
    assert rms(menu) > 300, "the menu prompt was not heard after the answer"
    # The prompt's first half, in four pieces: the jitter buffer sheds its start delay's
    # surplus frame (40 -> 20 ms on a file device) at the first quiet frame it gets, which
    # may be a pause of the prompt; the piece it falls in no longer matches.
    prompt = through_g711(VOICES.ivr_menu[: len(menu) // 2], "PCMU")
    size = len(prompt) // 4
    heard = [find(prompt[i * size : (i + 1) * size], menu) for i in range(4)]
    assert sum(score > 0.8 for _, score in heard) >= 3, heard
    lags = [lag for lag, score in heard if score > 0.8]
    assert lags == sorted(lags)  # in order
    # "You entered", "one", "two", "three", in this order, after the message. The SDK's
    # local feedback tone of "#" (160 ms) is mixed over the first frames: skip 200 ms.
    tail = recording[message_tick * 160 :]
    spoken = [VOICES.ivr_you_entered[1600:]] + [VOICES.digits[d] for d in "123"]
    lag, _ = find(through_g711(spoken[0], "PCMU"), tail)
    assert lag < 8000, f"readback started {lag / 8000:.2f} s after the message"
    scores = locate_in_order([through_g711(p, "PCMU") for p in spoken], tail)
    assert min(scores) > 0.8, f"readback not found after the message: {scores}"


async def test_ivr_entry_ends_after_the_inter_digit_timeout(fast_core: CoreServer) -> None:
    loop = asyncio.get_running_loop()
    operator = sandbox_operator(fast_core.url)
    messages: list[tuple[str, str, float]] = []
    changed = asyncio.Event()

    def on_message(content: str, content_type: str) -> None:
        messages.append((content, content_type, loop.time()))
        changed.set()

    try:
        call = await operator.dial(IVR)
        call.on("message_received", on_message)
        assert await call.wait_started(10)
        await call.send_dtmf("45")
        sent = loop.time()
        await asyncio.wait_for(changed.wait(), 5)
        waited = messages[0][2] - sent
        # An empty entry ("#" alone) repeats the menu and sends nothing; "w" is no key.
        await call.send_dtmf("#w6#")
        async with asyncio.timeout(5):
            while len(messages) < 2:
                changed.clear()
                await changed.wait()
        await call.hangup()
    finally:
        await operator.close()
    assert [m[:2] for m in messages] == [
        ("45", IVR_DIGITS_CONTENT_TYPE),
        ("6", IVR_DIGITS_CONTENT_TYPE),
    ]
    assert FAST.ivr_digit_timeout - 0.05 <= waited < FAST.ivr_digit_timeout + 2.0


async def test_busy_line_declines_with_busy(fast_core: CoreServer) -> None:
    operator = sandbox_operator(fast_core.url)
    rang: list[bool] = []
    try:
        call = await operator.dial(BUSY)
        call.on("ringing", rang.append)
        assert await call.wait_ended(10) == EndReason.REJECTED
    finally:
        await operator.close()
    assert call.end_message == BUSY_MESSAGE
    assert rang == []
    row = fast_core.store.call(call.call_sid)
    assert row is not None
    assert (row.status, row.end_reason, row.answered_at) == ("completed", "rejected", None)


async def test_no_answer_line_rings_then_ends_no_answer(fast_core: CoreServer) -> None:
    loop = asyncio.get_running_loop()
    operator = sandbox_operator(fast_core.url)
    log = EventLog(operator)
    rang: list[tuple[bool, float]] = []
    try:
        call = await operator.dial(NO_ANSWER)
        call.on("ringing", lambda early: rang.append((early, loop.time())))
        assert await call.wait_ended(10) == EndReason.NO_ANSWER
        ended = loop.time()
    finally:
        await operator.close()
    assert [early for early, _ in rang] == [False]
    assert ended - rang[0][1] >= FAST.no_answer_timeout - 0.05
    assert NO_ANSWER in call.end_message
    assert not log.of("call_started")
    assert call.stats.frames_received == 0, "the no-answer line sends no early media"
    row = fast_core.store.call(call.call_sid)
    assert row is not None
    assert row.end_reason == "no_answer"


async def test_failing_line_fails_with_a_clear_message(fast_core: CoreServer) -> None:
    operator = sandbox_operator(fast_core.url)
    rang: list[bool] = []
    try:
        call = await operator.dial(FAILING)
        call.on("ringing", rang.append)
        assert await call.wait_ended(10) == EndReason.FAILED
    finally:
        await operator.close()
    assert call.end_message == FAILING_MESSAGE
    assert "failing line" in call.end_message
    assert rang == []


async def test_speech_line_plays_its_recording_then_hangs_up(
    fast_core: CoreServer, tmp_path: Path
) -> None:
    """A-law leg: the recording arrives encoded with the leg's codec, then remote_hangup."""
    record = tmp_path / "speech.wav"
    device = FileAudioDevice(None, record)
    operator = sandbox_operator(
        fast_core.url, audio=lambda _call: device, codec_preferences=("PCMA",)
    )
    rang: list[bool] = []
    try:
        call = await operator.dial(SPEECH)
        call.on("ringing", rang.append)
        assert await call.wait_started(10)
        assert call.codec == "PCMA"
        assert await call.wait_ended(20) == EndReason.REMOTE_HANGUP
    finally:
        await operator.close()
    assert rang == [False]
    recording = read_wav(record)
    assert rms(recording) > 300
    # Half-second pieces of the recording, in order. Had the core encoded μ-law on this
    # A-law leg, the SDK's A-law decoding would turn it into noise that matches nothing.
    pieces = [p for p in chunks(through_g711(VOICES.speech, "PCMA")) if rms(p) > 500]
    scores = locate_in_order(pieces, recording)
    matched = sum(score > 0.8 for score in scores)
    assert matched >= 0.8 * len(scores), f"speech not in the recording: {scores}"


async def test_unserved_numbers_still_fail(fast_core: CoreServer) -> None:
    operator = sandbox_operator(fast_core.url)
    try:
        call = await operator.dial("+15550199")
        assert await call.wait_ended(10) == EndReason.FAILED
    finally:
        await operator.close()
    assert "not reachable on the sandbox network" in call.end_message
    assert ECHO in call.end_message


async def test_hanging_up_during_early_media_cancels(fast_core: CoreServer) -> None:
    """The IVR's ringback stops with the call: nothing is left running in the core."""
    operator = sandbox_operator(fast_core.url)
    rang = asyncio.Event()
    try:
        call = await operator.dial(IVR)
        call.on("ringing", lambda _early: rang.set())
        await asyncio.wait_for(rang.wait(), 10)
        await wait_until(lambda: call.stats.frames_received >= 3, timeout=5)
        await call.hangup()
        assert await call.wait_ended(5) == EndReason.CANCELLED
        await wait_until(lambda: not fast_core.core.calls, timeout=5)
    finally:
        await operator.close()


async def test_playout_is_paced_by_a_deadline_clock() -> None:
    """50 frames in 0.98 s even though every send takes 5 ms (sleep-paced sending would
    need 1.23 s); clips play in order, then silence; futures tell played from cleared."""
    loop = asyncio.get_running_loop()
    sent: list[tuple[float, int]] = []
    enough = asyncio.Event()

    async def send(frame: np.ndarray) -> None:
        sent.append((loop.time(), int(frame[0])))
        if len(sent) == 50:
            enough.set()
        await asyncio.sleep(0.005)

    out = Playout(send)
    first = out.play(np.full(3 * 160, 1, dtype=np.int16))
    second = out.play(np.full(2 * 160, 2, dtype=np.int16))
    task = loop.create_task(out.run())
    try:
        await asyncio.wait_for(enough.wait(), 5)
        assert await first is True
        assert await second is True
        dropped = out.play(np.full(160 * 100, 3, dtype=np.int16))
        out.clear()
        assert await dropped is False
        with pytest.raises(ValueError, match="whole 20 ms frames"):
            out.play(np.zeros(100, dtype=np.int16))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [value for _, value in sent[:6]] == [1, 1, 1, 2, 2, 0]
    span = sent[49][0] - sent[0][0]
    assert abs(span - 49 * 0.02) < 0.1, f"50 frames took {span:.3f} s"
    assert out.frames_sent >= 49  # the 50th send was still in progress when cancelled


def test_server_layering() -> None:
    """softphone.server uses softphone.protocol and softphone.media, never the SDK or UI."""
    root = Path(__file__).resolve().parent.parent / "softphone" / "server"
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[:2]
                assert top[0] != "textual", f"{path.name} imports {name}"
                if top[0] == "softphone":
                    allowed = len(top) == 2 and top[1] in {"protocol", "media", "server"}
                    assert allowed, f"{path.name} imports {name}"
