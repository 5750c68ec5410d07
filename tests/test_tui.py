"""The operator console driven by keys (Textual's Pilot) against a real sandbox core."""

from __future__ import annotations

import contextlib
import io
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import OptionList, Static

from softphone.engine import CallState, Operator, PresenceState, TokenInfo, token_url_provider
from softphone.engine.audio import AudioManager, AudioSettings
from softphone.engine.tokens import to_token_info
from softphone.media.devices import AudioSystem
from softphone.media.pyaudio_device import PyAudioDevice
from softphone.server import CoreConfig, CoreServer
from softphone.server.core import CoreTimings
from softphone.tui import PhoneApp, TuiConfig, create_app
from softphone.tui.clock import FrozenClock
from softphone.tui.history import CallHistory
from softphone.tui.screens.confirm import ConfirmScreen
from softphone.tui.screens.help import HelpScreen
from softphone.tui.screens.incoming import IncomingCallScreen
from softphone.tui.screens.picker import DevicePicker
from softphone.tui.widgets.audio import AudioPanel
from softphone.tui.widgets.event_log import EventLog, redact_text
from softphone.tui.widgets.meter import cells, meter
from tests.audio_env import (
    AUTO_RATE,
    FakeDevice,
    FakePyAudio,
    VirtualAudio,
    bandlimited_noise,
    provide_virtual_audio,
)
from tests.conftest import sandbox_operator, wait_until

FROZEN = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ECHO = "+15550100"
IVR, BUSY = "+15550101", "+15550102"
LINE_A, LINE_B = "+15550150", "+15550151"
MIC, MIC2, SPEAKER = VirtualAudio.MIC, VirtualAudio.MIC2, VirtualAudio.SPEAKER
KEY_NAMES = {"+": "plus", "*": "asterisk", "#": "number_sign"}


def watched_operator(url: str, ref: str = "op-1", **kwargs: Any) -> Operator:
    """A sandbox operator whose tokens claim a fixed expiry (50 min after FROZEN), so the
    status panel's countdown (``Operator.token_expires_at``) is the same on every run."""
    inner = token_url_provider(
        url + "/sandbox/token", body={"operatorRef": ref, "displayName": ref.upper()}
    )

    async def get_token() -> TokenInfo:
        return TokenInfo(to_token_info(await inner()).token, FROZEN + timedelta(minutes=50))

    kwargs.setdefault("audio", "null")
    return Operator(url, get_token, **kwargs)


def make_app(
    operator: Operator, tmp_path: Path, config: TuiConfig | None = None, **kwargs: Any
) -> PhoneApp:
    return create_app(
        config or TuiConfig(),
        operator=operator,
        history=CallHistory(tmp_path / "history.sqlite3"),
        clock=FrozenClock(FROZEN),
        **kwargs,
    )


async def until(pilot: Pilot[None], condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait (bounded) for a condition, then let the UI process what is queued."""
    await wait_until(condition, timeout)
    await pilot.pause()


async def type_number(pilot: Pilot[None], number: str) -> None:
    for char in number:
        await pilot.press(KEY_NAMES.get(char, char))


async def started(pilot: Pilot[None], app: PhoneApp) -> None:
    await until(pilot, lambda: app.phone.state.numbers_loaded)


@contextlib.asynccontextmanager
async def console(
    core: CoreServer, tmp_path: Path, *, notifications: bool = False
) -> AsyncIterator[tuple[PhoneApp, Pilot[None]]]:
    """The console on a sandbox operator of ``core``, headless, its numbers loaded; the
    operator is closed afterwards."""
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test(notifications=notifications) as pilot:
            await started(pilot, app)
            yield app, pilot
    finally:
        await op.close(force=True)


async def dial_echo(pilot: Pilot[None], app: PhoneApp, number: str = ECHO) -> None:
    await type_number(pilot, number)
    await pilot.press("d")
    await until(
        pilot,
        lambda: (
            app.phone.state.call is not None and app.phone.state.call.call.state == CallState.ACTIVE
        ),
    )


def log_texts(app: PhoneApp) -> list[str]:
    return [f"{e.name} {e.text}" for e in app.main.query_one(EventLog).entries]


def notices(app: PhoneApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app.notices]


# ---------------------------------------------------------------------- presence and calls


async def test_goes_online_on_a_chosen_number(core: CoreServer, tmp_path: Path) -> None:
    async with console(core, tmp_path) as (app, pilot):
        assert [n.phone_number for n in app.phone.state.numbers] == [LINE_A, LINE_B]
        await pilot.press("n", "down", "space")  # stop answering on line B
        assert app.phone.state.wanted == {"pn_15550150"}
        await pilot.press("o")
        await until(pilot, lambda: app.phone.state.presence == PresenceState.ONLINE)
        await until(pilot, lambda: app.phone.state.accepted == {"pn_15550150"})
        session = next(iter(core.core.sessions.values()))
        assert session.availability == {"pn_15550150"}
        assert "ONLINE" in str(app.main.query_one("#status").render())
        await pilot.press("space")  # line B again, applied at once
        await until(pilot, lambda: session.availability == {"pn_15550150", "pn_15550151"})
        await pilot.press("o")
        await until(pilot, lambda: app.phone.state.presence == PresenceState.OFFLINE)
        assert any("presence online" in t for t in log_texts(app))


async def test_dial_echo_line_and_hang_up(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test() as pilot:
            await started(pilot, app)
            await type_number(pilot, "+1")
            assert "✗" in str(app.main.query_one("#dialpad").render())
            await type_number(pilot, "5550100")
            assert "✓ E.164" in str(app.main.query_one("#dialpad").render())
            await pilot.press("d")
            await until(pilot, lambda: app.phone.state.call is not None)
            view = app.phone.state.call
            assert view is not None
            await until(pilot, lambda: view.call.state == CallState.ACTIVE)
            panel = str(app.main.query_one("#call").render())
            assert "ACTIVE" in panel
            assert ECHO in panel
            assert view.call.from_ == LINE_A  # the caller ID: the first number by default
            await pilot.press("h")
            await until(pilot, lambda: app.phone.state.call is None)
            await until(pilot, lambda: len(app.phone.state.history) == 1)
            entry = app.phone.state.history[0]
            assert (entry.direction, entry.number, entry.end_reason) == ("outbound", ECHO, "hangup")
        await wait_until((tmp_path / "history.sqlite3").exists, 5)
        with sqlite3.connect(tmp_path / "history.sqlite3") as db:
            rows = db.execute("SELECT number, end_reason FROM calls").fetchall()
        assert rows == [(ECHO, "hangup")]
    finally:
        await op.close(force=True)


async def test_caller_id_is_the_highlighted_number(core: CoreServer, tmp_path: Path) -> None:
    async with console(core, tmp_path) as (app, pilot):
        await pilot.press("n", "down", "c", "escape")
        assert app.phone.state.caller_id == LINE_B
        app.set_focus(None)
        await dial_echo(pilot, app)
        assert app.phone.state.call is not None
        assert app.phone.state.call.call.from_ == LINE_B
        await pilot.press("h")
        await until(pilot, lambda: app.phone.state.call is None)


async def go_online(pilot: Pilot[None], app: PhoneApp) -> None:
    await started(pilot, app)
    await pilot.press("o")
    await until(pilot, lambda: app.phone.state.accepted == {"pn_15550150", "pn_15550151"})


async def test_accept_inbound_call(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test() as pilot:
            await go_online(pilot, app)
            sid, offered = await core.core.place_inbound("+15551230001", LINE_A, {})
            assert offered == 1
            await until(pilot, lambda: isinstance(app.screen, IncomingCallScreen))
            text = str(app.screen.query_one("#incoming-text").render())
            assert "+15551230001" in text
            assert LINE_A in text
            await pilot.press("a")
            await until(
                pilot,
                lambda: (
                    app.phone.state.call is not None
                    and app.phone.state.call.call.state == CallState.ACTIVE
                ),
            )
            assert app.screen is app.main
            assert "← +15551230001" in str(app.main.query_one("#call").render())
            await pilot.press("h")
            await until(pilot, lambda: app.phone.state.call is None)
        row = core.store.call(sid)
        assert row is not None
        assert row.end_reason == "hangup"
    finally:
        await op.close(force=True)


async def test_reject_inbound_call(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test() as pilot:
            await go_online(pilot, app)
            sid, _ = await core.core.place_inbound("+15551230002", LINE_B, {})
            await until(pilot, lambda: isinstance(app.screen, IncomingCallScreen))
            await pilot.press("r")
            await until(pilot, lambda: app.phone.state.offer is None)
            assert app.screen is app.main
            assert app.phone.state.history[0].end_reason == "rejected"
            await wait_until(
                lambda: (row := core.store.call(sid)) is not None and bool(row.end_reason), 5
            )
        row = core.store.call(sid)
        assert row is not None
        assert row.end_reason == "rejected"
    finally:
        await op.close(force=True)


async def test_ignore_leaves_the_offer_to_others(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    other = sandbox_operator(core.url, "op-2")
    offers: list[Any] = []
    other.on("incoming_call", offers.append)
    app = make_app(op, tmp_path)
    try:
        await other.go_online(["pn_15550150"])
        async with app.run_test() as pilot:
            await go_online(pilot, app)
            await core.core.place_inbound("+15551230003", LINE_A, {})
            await until(pilot, lambda: isinstance(app.screen, IncomingCallScreen) and bool(offers))
            await pilot.press("i")
            await until(pilot, lambda: app.phone.state.offer is None)
            assert app.screen is app.main
            await offers[0].accept()  # the other operator still can
            assert await offers[0].wait_started(10)
            assert app.phone.state.call is None
            assert app.phone.state.history[0].end_reason == "ignored"
            await offers[0].hangup()
    finally:
        await other.close()
        await op.close(force=True)


async def test_offer_taken_by_another_operator_closes_the_dialog(
    core: CoreServer, tmp_path: Path
) -> None:
    op = sandbox_operator(core.url)
    other = sandbox_operator(core.url, "op-2")
    offers: list[Any] = []
    other.on("incoming_call", offers.append)
    app = make_app(op, tmp_path)
    try:
        await other.go_online(["pn_15550150"])
        async with app.run_test(notifications=True) as pilot:
            await go_online(pilot, app)
            await core.core.place_inbound("+15551230004", LINE_A, {})
            await until(pilot, lambda: isinstance(app.screen, IncomingCallScreen) and bool(offers))
            await offers[0].accept()
            await until(pilot, lambda: not isinstance(app.screen, IncomingCallScreen))
            assert any("answered by another operator" in n for n in notices(app))
            await offers[0].hangup()
    finally:
        await other.close()
        await op.close(force=True)


async def test_offer_withdrawn_by_the_caller_closes_the_dialog(
    core: CoreServer, tmp_path: Path
) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test(notifications=True) as pilot:
            await go_online(pilot, app)
            sid, _ = await core.core.place_inbound("+15551230005", LINE_A, {})
            await until(pilot, lambda: isinstance(app.screen, IncomingCallScreen))
            await core.core.remote_hangup(sid)
            await until(pilot, lambda: not isinstance(app.screen, IncomingCallScreen))
            assert any("cancelled" in n and "+15551230005" in n for n in notices(app))
    finally:
        await op.close(force=True)


async def test_mute_and_dtmf_to_the_echo_line(core: CoreServer, tmp_path: Path) -> None:
    async with console(core, tmp_path) as (app, pilot):
        await dial_echo(pilot, app)
        view = app.phone.state.call
        assert view is not None
        sid = view.call.call_sid
        await pilot.press("m")
        leg = core.core.calls[sid].media
        assert leg is not None
        await until(pilot, lambda: view.muted and leg.muted)
        assert "MUTED" in str(app.main.query_one("#call").render())
        await pilot.press("m")
        await until(pilot, lambda: not view.muted)
        await pilot.press("5", "number_sign")
        await until(pilot, lambda: core.core.calls[sid].dtmf == ["5", "#"])
        assert app.phone.state.dial == ""  # digits went to the call, not the dialpad
        await until(pilot, lambda: view.heard == "5#")  # the echo line heard them
        assert "DTMF 5#" in str(app.main.query_one("#call").render())
        await pilot.press("h")
        await until(pilot, lambda: app.phone.state.call is None)


async def test_meters_show_the_peak_between_two_reads(core: CoreServer, tmp_path: Path) -> None:
    """The meters are read five times a second; a level that lasted one 20 ms frame between
    two reads still shows (the device writes silence after it, 50 times a second)."""
    async with console(core, tmp_path) as (app, pilot):
        await dial_echo(pilot, app)
        device = app.operator.audio.active_device
        assert device is not None
        panel = app.main.query_one(AudioPanel)
        device.levels.write_input(0.9)
        device.levels.write_output(0.7)
        await until(pilot, lambda: panel.levels == (0.9, 0.7))
        await until(pilot, lambda: panel.levels == (0.0, 0.0))  # the silence after it
        await pilot.press("h")
        await until(pilot, lambda: app.phone.state.call is None)


async def test_dtmf_to_the_ivr_shows_its_answer(core: CoreServer, tmp_path: Path) -> None:
    async with console(core, tmp_path) as (app, pilot):
        await dial_echo(pilot, app, IVR)  # rings 2 s with early media, then answers
        view = app.phone.state.call
        assert view is not None
        sid = view.call.call_sid
        await type_number(pilot, "123#")
        await until(pilot, lambda: core.core.calls[sid].dtmf == list("123#"))
        await until(pilot, lambda: ("application/x-ivr-digits", "123") in view.messages)
        panel = str(app.main.query_one("#call").render())
        assert "DTMF 123#" in panel
        assert "ivr-digits 123" in panel
        assert "call.message_received application/x-ivr-digits: 123" in log_texts(app)
        await type_number(pilot, "45#")  # the panel shows the IVR's latest entry
        await until(pilot, lambda: ("application/x-ivr-digits", "45") in view.messages)
        assert "ivr-digits 45" in str(app.main.query_one("#call").render())
        await pilot.press("h")
        await until(pilot, lambda: app.phone.state.call is None)
        assert app.phone.state.history[0].end_reason == "hangup"


async def test_busy_line_is_reported_and_the_app_goes_on(core: CoreServer, tmp_path: Path) -> None:
    async with console(core, tmp_path, notifications=True) as (app, pilot):
        await type_number(pilot, BUSY)
        await pilot.press("d")
        await until(pilot, lambda: any("line busy" in n for n in notices(app)))
        assert f"Call ended: {BUSY}: line busy" in notices(app)
        assert app.phone.state.call is None
        ended = [e for e in app.main.query_one(EventLog).entries if e.name == "call_ended"]
        assert ended[-1].error
        assert ended[-1].text.endswith("ended: line busy")
        status = str(app.main.query_one("#status").render())
        assert f"last error: call with {BUSY}: line busy" in status
        assert app.phone.state.history[0].end_reason == "rejected"
        assert "line busy" in str(app.main.query_one("#call").render())
        await dial_echo(pilot, app)  # the app goes on: the next call works
        await pilot.press("h")
        await until(pilot, lambda: app.phone.state.call is None)


async def test_redial_from_history(core: CoreServer, tmp_path: Path) -> None:
    async with console(core, tmp_path) as (app, pilot):
        await dial_echo(pilot, app)
        await pilot.press("h")
        await until(pilot, lambda: app.phone.state.call is None)
        await pilot.press("y", "enter")  # the history panel, its first row
        await until(
            pilot,
            lambda: (
                app.phone.state.call is not None
                and app.phone.state.call.call.state == CallState.ACTIVE
            ),
        )
        assert app.phone.state.call is not None
        assert app.phone.state.call.call.to == ECHO
        await pilot.press("h")
        await until(pilot, lambda: len(app.phone.state.history) == 2)


async def test_history_survives_a_restart(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    try:
        app = make_app(op, tmp_path)
        async with app.run_test() as pilot:
            await started(pilot, app)
            await dial_echo(pilot, app)
            await pilot.press("h")
            await until(pilot, lambda: app.phone.state.call is None)
            await app.phone.flush()
        rows = await CallHistory(tmp_path / "history.sqlite3").recent()
        again = make_app(op, tmp_path)
        async with again.run_test() as pilot:
            await until(pilot, lambda: len(again.phone.state.history) == len(rows) == 1)
            await pilot.press("d")  # nothing typed: redial the last call
            await until(pilot, lambda: again.phone.state.call is not None)
            assert again.phone.state.call is not None
            assert again.phone.state.call.call.to == ECHO
            await pilot.press("h")
            await until(pilot, lambda: again.phone.state.call is None)
    finally:
        await op.close(force=True)


# ---------------------------------------------------------------------- audio


def fake_audio(*devices: FakeDevice, **kwargs: Any) -> AudioManager:
    return AudioManager(
        backend="pyaudio", system=AudioSystem(backend=FakePyAudio(list(devices), **kwargs))
    )


async def test_switching_microphone(core: CoreServer, tmp_path: Path) -> None:
    audio = fake_audio(
        FakeDevice("Laptop Mic", inputs=1),
        FakeDevice("USB Headset", inputs=1, outputs=2),
        FakeDevice("Speakers", outputs=2),
        default_input=0,
        default_output=2,
    )
    op = sandbox_operator(core.url, audio=audio)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test() as pilot:
            await started(pilot, app)
            await pilot.press("i")
            await until(pilot, lambda: isinstance(app.screen, DevicePicker))
            picker = app.screen
            assert isinstance(picker, DevicePicker)
            assert [d.name for d in picker.devices] == ["Laptop Mic", "USB Headset"]
            await pilot.press("down", "enter")
            await until(pilot, lambda: audio.settings.input == "USB Headset")
            assert app.phone.state.input_device == "USB Headset"
            assert "mic USB Headset" in app.main.query_one("#audio", AudioPanel).lines()
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, DevicePicker))
            await pilot.press("escape")  # cancel: nothing changes
            await until(pilot, lambda: app.screen is app.main)
            assert audio.settings.output is None
    finally:
        await op.close(force=True)


async def test_no_microphone_is_reported_and_the_app_goes_on(
    core: CoreServer, tmp_path: Path
) -> None:
    audio = fake_audio(FakeDevice("Speakers", outputs=2), default_output=0)
    op = sandbox_operator(core.url, audio=audio)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test(notifications=True) as pilot:
            await started(pilot, app)
            await pilot.press("i")
            await until(pilot, lambda: any("No microphone" in n for n in notices(app)))
            assert app.screen is app.main
            await pilot.press("T")  # the microphone test needs one too
            await until(pilot, lambda: any("NO_MICROPHONE" in n for n in notices(app)))
            assert app.phone.state.audio_test is None
            assert "NO_MICROPHONE" in (app.phone.state.last_error or "")
            await dial_echo(pilot, app)  # calls still work (on the silent stand-in)
            await pilot.press("h")
            await until(pilot, lambda: app.phone.state.call is None)
    finally:
        await op.close(force=True)


# ---------------------------------------------------------------------- sound card
# Real PortAudio through the virtual devices of tests/audio_env.py (a private PulseAudio).


@pytest.fixture(scope="session")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    yield from provide_virtual_audio(tmp_path_factory)


def sound_card_config(input: str = MIC, output: str = SPEAKER) -> TuiConfig:
    return TuiConfig(input_device=input, output_device=output, sounds=False)


def sound_card() -> AudioManager:
    """PortAudio devices; processing off (echo cancellation would remove the echo line)."""
    settings = AudioSettings(echo_cancellation=False, noise_suppression=False, auto_gain=False)
    return AudioManager(backend="pyaudio", settings=settings, system=AudioSystem())


async def test_switching_the_microphone_during_a_call_on_the_sound_card(
    core: CoreServer, tmp_path: Path, virtual_audio: VirtualAudio
) -> None:
    rate = AUTO_RATE
    virtual_audio.write_input(MIC, np.zeros(0, dtype=np.int16), rate=rate, pad_seconds=30)
    virtual_audio.write_input(MIC2, bandlimited_noise(30.0, rate, seed=61), rate=rate)
    audio = sound_card()
    op = sandbox_operator(core.url, audio=audio)
    app = make_app(op, tmp_path, sound_card_config())
    try:
        async with app.run_test() as pilot:
            await started(pilot, app)
            await dial_echo(pilot, app)
            view = app.phone.state.call
            assert view is not None
            call = view.call
            device = audio.active_device
            assert isinstance(device, PyAudioDevice)
            assert device.input_name == MIC
            await until(pilot, lambda: call.stats.frames_received >= 25)
            panel = app.main.query_one("#audio", AudioPanel)
            assert panel.levels[0] < 0.1  # the first microphone is silent

            await pilot.press("i")
            await until(pilot, lambda: isinstance(app.screen, DevicePicker))
            picker = app.screen
            assert isinstance(picker, DevicePicker)
            names = [d.name for d in picker.devices]
            assert MIC in names
            assert MIC2 in names
            current = picker.query_one(OptionList).highlighted
            assert current == names.index(MIC)  # the picker starts on the device in use
            steps = names.index(MIC2) - current
            await pilot.press(*(["down"] * steps if steps > 0 else ["up"] * -steps), "enter")
            await until(pilot, lambda: device.input_name == MIC2)
            await until(pilot, lambda: app.phone.state.input_device == MIC2)

            assert audio.active_device is device  # switched in place: the call went on
            assert app.phone.state.call is view
            assert call.state == CallState.ACTIVE
            assert f"mic {MIC2}" in panel.lines()
            assert any(t.endswith(f"microphone: {MIC2}") for t in log_texts(app))
            switched_at = call.stats.frames_received
            await until(pilot, lambda: call.stats.frames_received >= switched_at + 50)
            await until(pilot, lambda: panel.levels[0] > 0.4)  # the new microphone's noise
            # ...drawn on the microphone's meter line (a meter fills with ▮, · is empty)
            await until(pilot, lambda: panel.lines()[1].count("▮") >= 0.3 * panel.meter_width())
            assert call.state == CallState.ACTIVE
            assert device.realtime_stats().callback_errors == 0
            await pilot.press("h")
            await until(pilot, lambda: app.phone.state.call is None)
            assert app.phone.state.history[0].end_reason == "hangup"
    finally:
        await op.close(force=True)


def dominant_hz(samples: np.ndarray[Any, Any], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[int(np.argmax(spectrum))])


async def test_speaker_and_microphone_tests_on_the_sound_card(
    core: CoreServer, tmp_path: Path, virtual_audio: VirtualAudio
) -> None:
    rate = AUTO_RATE
    voice = bandlimited_noise(3.5, rate, seed=62)
    virtual_audio.write_input(MIC, voice, rate=rate)
    virtual_audio.clear_output(SPEAKER)
    op = sandbox_operator(core.url, audio=sound_card())
    app = make_app(op, tmp_path, sound_card_config())
    try:
        async with app.run_test(notifications=True) as pilot:
            await started(pilot, app)
            panel = app.main.query_one("#audio", AudioPanel)
            await pilot.press("t")
            await until(pilot, lambda: "speaker test running" in " ".join(panel.lines()))
            await until(pilot, lambda: app.phone.state.audio_test is None)
            assert app.phone.state.last_error is None
            tone = virtual_audio.read_output(SPEAKER)
            assert len(tone) >= 1.5 * rate  # 2 s of test tone
            assert abs(dominant_hz(tone, rate) - 1000) < 5

            virtual_audio.clear_output(SPEAKER)
            await pilot.press("T")  # records 3 s, then plays them back
            await until(pilot, lambda: app.phone.state.audio_test == "microphone")
            await until(pilot, lambda: app.phone.state.audio_test is None, timeout=20)
            heard = [n for n in notices(app) if n.startswith(": Microphone test: peak level")]
            assert heard, notices(app)
            assert float(heard[-1].rsplit(" ", 1)[1]) > 0.5  # the noise at -18 dBFS
            playback = virtual_audio.read_output(SPEAKER).astype(np.float64)
            assert len(playback) >= 2.5 * rate
            assert np.sqrt(np.mean(playback**2)) > 1000  # the recording came back
    finally:
        await op.close(force=True)


async def test_rescanning_finds_a_plugged_microphone(
    core: CoreServer, tmp_path: Path, virtual_audio: VirtualAudio
) -> None:
    op = sandbox_operator(core.url, audio=sound_card())
    app = make_app(op, tmp_path, sound_card_config())
    plugged = "tui_hotplug_mic"
    try:
        async with app.run_test(notifications=True) as pilot:
            await started(pilot, app)
            await pilot.press("D")
            await until(pilot, lambda: any("Audio devices: no change" in n for n in notices(app)))
            with virtual_audio.extra_input(plugged):
                await pilot.press("D")
                await until(pilot, lambda: any(f"added {plugged}" in n for n in notices(app)))
            assert f"devices_changed added {plugged}" in log_texts(app)
            await pilot.press("D")
            await until(pilot, lambda: any(f"removed {plugged}" in n for n in notices(app)))
            assert app.phone.state.last_error is None
    finally:
        await op.close(force=True)


# ---------------------------------------------------------------------- errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_core_down_is_reported_and_recovered(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    op = sandbox_operator(url)
    app = make_app(op, tmp_path)
    server: CoreServer | None = None
    try:
        async with app.run_test(notifications=True) as pilot:
            await until(pilot, lambda: any("Cannot reach the core" in n for n in notices(app)))
            assert "last error: TOKEN_FETCH_FAILED" in str(app.main.query_one("#status").render())
            await pilot.press("question_mark")  # the app still answers keys
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            server = CoreServer(
                CoreConfig(
                    data_dir=tmp_path / "core", port=port, sandbox=True, timings=CoreTimings()
                )
            )
            await server.start()
            await until(pilot, lambda: app.phone.state.numbers_loaded, timeout=15)
            assert any(f"Connected to {url}" in n for n in notices(app))
            await pilot.press("o")
            await until(pilot, lambda: app.phone.state.presence == PresenceState.ONLINE)
    finally:
        await op.close(force=True)
        if server is not None:
            await server.stop()


async def test_bad_token_url_is_reported(core: CoreServer, tmp_path: Path) -> None:
    op = Operator(core.url, core.url + "/no-such-token-endpoint", audio="null")
    app = make_app(op, tmp_path)
    try:
        async with app.run_test(notifications=True) as pilot:
            await until(pilot, lambda: any("TOKEN_FETCH_FAILED" in n for n in notices(app)))
            assert any(e.error for e in app.main.query_one(EventLog).entries)
            await pilot.press("o")  # going online fails the same way; nothing crashes
            await until(pilot, lambda: len(app.notices) >= 2)
            assert app.phone.state.presence == PresenceState.OFFLINE
    finally:
        await op.close(force=True)


async def test_refused_dials_are_reported(core: CoreServer, tmp_path: Path) -> None:
    async with console(core, tmp_path, notifications=True) as (app, pilot):
        await type_number(pilot, "+1")
        await pilot.press("d")
        await until(pilot, lambda: any("Not a phone number" in n for n in notices(app)))
        assert app.phone.state.call is None
        await pilot.press("escape")
        await type_number(pilot, "+15559990000")  # nobody there: the network fails it
        await pilot.press("d")
        await until(pilot, lambda: any("Call ended" in n for n in notices(app)))
        assert "not reachable" in " ".join(notices(app))
        assert app.phone.state.call is None
        assert app.phone.state.history[0].end_reason == "failed"
        await dial_echo(pilot, app)  # and the next call works
        await pilot.press("h")
        await until(pilot, lambda: app.phone.state.call is None)


# ---------------------------------------------------------------------- keys


async def test_quit_during_a_call_asks_first(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test() as pilot:
            await started(pilot, app)
            await dial_echo(pilot, app)
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("n")
            await until(pilot, lambda: app.screen is app.main)
            assert app.phone.state.call is not None
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_until(lambda: op.state == PresenceState.DESTROYED, 10)
        assert not app.is_running
        assert not core.core.calls or all(c.ended for c in core.core.calls.values())
        rows = await CallHistory(tmp_path / "history.sqlite3").recent()
        assert [(r.number, r.end_reason) for r in rows] == [(ECHO, "hangup")]  # recorded
    finally:
        await op.close(force=True)


async def test_quit_without_a_call_does_not_ask(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test() as pilot:
            await go_online(pilot, app)
            await pilot.press("q")
            await wait_until(lambda: op.state == PresenceState.DESTROYED, 10)
            assert not isinstance(app.screen, ConfirmScreen)
        assert not app.is_running
        await wait_until(lambda: not core.core.sessions, 5)  # went offline before closing
    finally:
        await op.close(force=True)


async def test_help_palette_and_remapped_keys(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path, TuiConfig(keys={"dial": "x", "hangup": "e"}))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot, app)
            await pilot.press("f1")
            assert isinstance(app.screen, HelpScreen)
            console = Console(width=120, record=True, file=io.StringIO())
            console.print(app.screen.query_one("#help-text", Static).content)
            help_text = console.export_text()
            assert "Call the typed number" in help_text
            lines = [" ".join(line.split()) for line in help_text.splitlines()]
            assert any(line.startswith("x Call the typed number") for line in lines)  # remapped
            assert any(line.startswith("e Hang up") for line in lines)
            assert any(line.startswith("D Re-scan the audio devices") for line in lines)
            await pilot.press("escape")
            titles = [c.title for c in app.get_system_commands(app.main)]
            assert any(t.startswith("Call:") for t in titles)
            assert any(t.startswith("Online:") for t in titles)
            assert not any(t.startswith("Hang up:") for t in titles)  # not without a call
            await type_number(pilot, ECHO)
            await pilot.press("d")  # remapped away: no call
            await pilot.press("x")
            await until(
                pilot,
                lambda: (
                    app.phone.state.call is not None
                    and app.phone.state.call.call.state == CallState.ACTIVE
                ),
            )
            assert any(c.title.startswith("Hang up:") for c in app.get_system_commands(app.main))
            await pilot.press("e")
            await until(pilot, lambda: app.phone.state.call is None)
    finally:
        await op.close(force=True)


async def test_event_log_filter_and_token_redaction(core: CoreServer, tmp_path: Path) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test() as pilot:
            await go_online(pilot, app)
            log = app.main.query_one(EventLog)
            assert {e.name for e in log.entries} >= {"presence_state_changed", "numbers"}
            await pilot.press("slash")
            await type_number(pilot, "presence")
            await pilot.pause()
            shown = log.shown_entries()
            assert shown
            assert all("presence" in e.name for e in shown)
            await pilot.press("escape")
            assert log.filter == "presence"
            token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcC0xIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
            app.log_event("test", f"got {token}")
            assert token not in log.entries[-1].text
            assert "redacted" in log.entries[-1].text
    finally:
        await op.close(force=True)


@pytest.mark.parametrize("width", [4, 20, 33])
@pytest.mark.parametrize("level", [0.0, 0.3, 0.61, 0.9, 1.0, 1.7])
def test_meter_cells_and_colours(level: float, width: int) -> None:
    text = meter(level, width)
    filled = cells(level, width)
    assert text.plain == "▮" * filled + "·" * (width - filled)
    for i in range(width):  # each cell's colour is that of the band its right edge is in
        styles = {str(s.style) for s in text.spans if s.start <= i < s.end}
        at = (i + 1) / width
        wanted = "dim" if i >= filled else "red" if at > 0.85 else "yellow" if at > 0.6 else "green"
        assert styles == {wanted}, (i, styles)


def test_redact_text_hides_bearer_tokens() -> None:
    assert "abcdefghijklmnop" not in redact_text("Authorization: Bearer abcdefghijklmnopqrstu")
    assert redact_text("presence online") == "presence online"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_every_panel_is_visible(
    core: CoreServer, tmp_path: Path, size: tuple[int, int]
) -> None:
    op = sandbox_operator(core.url)
    app = make_app(op, tmp_path)
    try:
        async with app.run_test(size=size) as pilot:
            await started(pilot, app)
            for selector in (
                "#status",
                "#dialpad",
                "#call",
                "#numbers",
                "#audio",
                "#history",
                "#log",
            ):
                region = app.main.query_one(selector).region
                assert region.width >= 20, selector
                assert region.height >= 2, selector
                assert region.right <= size[0], selector
                assert region.bottom <= size[1], selector
    finally:
        await op.close(force=True)


async def test_shut_down_hangs_up_records_the_call_and_exits_with_its_status(
    core: CoreServer, tmp_path: Path
) -> None:
    """What SIGTERM (and a lost terminal) run, headless: no question asked, the call hung up
    and recorded, the app gone with status 143. (With a real terminal: test_tui_terminal.)"""
    async with console(core, tmp_path) as (app, pilot):
        await dial_echo(pilot, app)
        sid = app.phone.state.call.call.call_sid  # type: ignore[union-attr]
        app.shut_down("terminate")
        app.shut_down("hangup")  # a second cause changes nothing
        await until(pilot, lambda: app.return_code is not None)
        assert app.shutdown_cause == "terminate"
    assert app.return_code == 143
    row = core.store.call(sid)
    assert row is not None
    assert row.end_reason == "hangup"  # the core was told: the call did not just drop
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        rows = db.execute("SELECT number, end_reason FROM calls").fetchall()
    assert rows == [(ECHO, "hangup")]
