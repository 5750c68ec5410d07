"""``operator.audio``: the operator's audio devices, local sounds and audio processing.

One :class:`AudioManager` per :class:`~softphone.engine.operator.Operator`. It picks the
microphone and speaker, switches them during a call, re-scans for devices, plays the
ringtone while an offer is pending, runs the speaker and microphone tests, and creates the
audio device of each call. Blocking PortAudio work (opening streams, enumerating) runs in
a worker thread so the event loop never waits on a sound card.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from softphone.engine.errors import ClientErrorCode, OperatorError
from softphone.media import (
    AudioDevice,
    AudioDeviceError,
    AudioErrorCode,
    AudioProcessor,
    NullAudioDevice,
    frame_level,
    ringback,
    ringtone,
    test_tone,
)

if TYPE_CHECKING:
    from softphone.engine.call import Call
    from softphone.media.devices import AudioSystem, DeviceInfo, DevicesChange

log = logging.getLogger("audin.sdk.audio")

Backend = Literal["pyaudio", "null"]
DeviceSpec = int | str | None
DeviceFactory = Callable[["Call"], AudioDevice]


DEVICE_RATE_RANGE: Final = (8000, 384000)
"""Rates (Hz) ``AudioSettings.rate`` accepts as a number."""


@dataclass
class AudioSettings:
    """The operator's audio preferences (the seed SDK's ``audioConstraints`` and more)."""

    input: DeviceSpec = None
    """Microphone: ``None`` = system default, an index, or (part of) a device name."""
    output: DeviceSpec = None
    """Speaker / headset, same forms."""
    sounds: bool = True
    """Ringtone, ringback and DTMF feedback on the speaker."""
    echo_cancellation: bool = True
    noise_suppression: bool = True
    auto_gain: bool = True
    rate: int | Literal["auto", "native"] = "auto"
    """Rate the sound card streams are opened at. ``"auto"``: 8 kHz, the call's rate, on a
    sound server's device (PulseAudio / PipeWire convert in their own process); 48 kHz on
    another ALSA device that takes it, else the device's own rate, with the conversion
    done here (see :class:`~softphone.media.pyaudio_device.PyAudioDevice`); ``"native"``:
    always the device's own rate; a number: that rate (Hz, at least 8000)."""

    def __post_init__(self) -> None:
        rate = self.rate
        low, high = DEVICE_RATE_RANGE
        if isinstance(rate, bool) or not (
            rate in ("auto", "native") or (isinstance(rate, int) and low <= rate <= high)
        ):
            raise ValueError(f"rate must be 'auto', 'native' or {low}-{high} Hz, got {rate!r}")

    @property
    def device_rate(self) -> int | Literal["auto"] | None:
        """``rate`` as :class:`~softphone.media.pyaudio_device.PyAudioDevice` takes it."""
        return None if self.rate == "native" else self.rate


@dataclass(frozen=True, slots=True)
class MicrophoneTest:
    """Result of :meth:`AudioManager.test_microphone`: what was heard, then played back."""

    seconds: float
    peak_level: float
    mean_level: float
    frames: int

    @property
    def heard_something(self) -> bool:
        return self.peak_level > 0.3


class AudioManager:
    """Device selection, local sounds, tests and per-call devices of one operator."""

    def __init__(
        self,
        *,
        backend: Backend = "pyaudio",
        settings: AudioSettings | None = None,
        device_factory: DeviceFactory | None = None,
        system: AudioSystem | None = None,
    ) -> None:
        self.backend: Backend = backend
        self.settings = settings or AudioSettings()
        self._factory = device_factory
        self._system = system
        self._active: AudioDevice | None = None
        self._ringer: AudioDevice | None = None
        self._emit: Callable[[str, Any], None] = lambda _name, _value: None
        self._stops: set[asyncio.Future[None]] = set()
        self.processor: AudioProcessor | None = None

    # ------------------------------------------------------------------ devices

    @property
    def system(self) -> AudioSystem:
        """The process's PortAudio wrapper (created on first use)."""
        if self._system is None:
            from softphone.media.devices import AudioSystem

            self._system = AudioSystem()
        return self._system

    async def devices(self) -> list[DeviceInfo]:
        """Every input and output device PortAudio knows (``AUDIO_BACKEND_UNAVAILABLE``)."""
        return await asyncio.to_thread(self.system.devices)

    @property
    def active_device(self) -> AudioDevice | None:
        """The device of the call in progress, if any."""
        return self._active

    async def select_input(self, spec: DeviceSpec) -> DeviceInfo | None:
        """Use this microphone from now on; switches the call in progress without dropping it."""
        info = await self._switch("input", spec)
        self.settings.input = spec
        return info

    async def select_output(self, spec: DeviceSpec) -> DeviceInfo | None:
        """Use this speaker from now on; switches the call in progress without dropping it."""
        info = await self._switch("output", spec)
        self.settings.output = spec
        return info

    async def _switch(
        self, kind: Literal["input", "output"], spec: DeviceSpec
    ) -> DeviceInfo | None:
        if self.backend != "pyaudio" or self._factory is not None:
            return None
        from softphone.media.pyaudio_device import PyAudioDevice

        device = self._active
        try:
            if isinstance(device, PyAudioDevice):
                method = device.switch_input if kind == "input" else device.switch_output
                return await asyncio.to_thread(method, spec)
            find = self.system.find_input if kind == "input" else self.system.find_output
            info = await asyncio.to_thread(find, spec)
        except AudioDeviceError as exc:
            raise OperatorError(exc.code, exc.message, exc) from exc
        if device is not None:
            # The call runs on the silent stand-in because its sound card failed: replace it
            # with a real device now that a working one was picked.
            await self._replace_active(kind, spec)
        return info

    async def _replace_active(self, kind: Literal["input", "output"], spec: DeviceSpec) -> None:
        from softphone.media.pyaudio_device import PyAudioDevice

        inp = spec if kind == "input" else self.settings.input
        out = spec if kind == "output" else self.settings.output

        def open_new() -> AudioDevice:
            new = PyAudioDevice(self.system, inp, out, rate=self.settings.device_rate)
            new.mixer.enabled = self.settings.sounds
            new.start()
            return new

        try:
            new = await asyncio.to_thread(open_new)
        except AudioDeviceError as exc:
            raise OperatorError(exc.code, exc.message, exc) from exc
        old, self._active = self._active, new
        self.processor = self._new_processor()
        if old is not None:
            await self._stop_device(old)

    async def rescan(self) -> DevicesChange:
        """Enumerate again (in a child process, so open streams are not disturbed); emits
        ``devices_changed`` when something changed and an error if an active device is gone."""
        active: tuple[str, ...] = ()
        from softphone.media.pyaudio_device import PyAudioDevice

        if isinstance(self._active, PyAudioDevice):
            active = self._active.active_names
        change = await asyncio.to_thread(self.system.rescan, active)
        if change.changed:
            self._emit("devices_changed", change)
        if change.lost_active:
            self._emit(
                "error",
                OperatorError(
                    AudioErrorCode.AUDIO_DEVICE_LOST,
                    "a device in use disappeared; pick another microphone or speaker",
                ),
            )
        return change

    def set_processing(
        self,
        *,
        echo_cancellation: bool | None = None,
        noise_suppression: bool | None = None,
        auto_gain: bool | None = None,
    ) -> None:
        """Switch echo cancellation, noise suppression or gain control; applies to the call
        in progress at once and to later calls."""
        settings = self.settings
        if echo_cancellation is not None:
            settings.echo_cancellation = echo_cancellation
        if noise_suppression is not None:
            settings.noise_suppression = noise_suppression
        if auto_gain is not None:
            settings.auto_gain = auto_gain
        processor = self.processor
        if processor is None and self._active is not None:
            self.processor = self._new_processor()
        elif processor is not None:
            processor.echo_cancellation = settings.echo_cancellation
            processor.noise_suppression = settings.noise_suppression
            processor.auto_gain = settings.auto_gain

    def _new_processor(self) -> AudioProcessor | None:
        """Echo cancellation, noise suppression and gain control are for microphones: file
        and silent devices are sent untouched."""
        settings = self.settings
        wanted = settings.echo_cancellation or settings.noise_suppression or settings.auto_gain
        if not wanted or not self.uses_sound_card:
            return None
        return AudioProcessor(
            echo_cancellation=settings.echo_cancellation,
            noise_suppression=settings.noise_suppression,
            auto_gain=settings.auto_gain,
        )

    # ------------------------------------------------------------------ sounds

    @property
    def sounds_enabled(self) -> bool:
        return self.settings.sounds

    @sounds_enabled.setter
    def sounds_enabled(self, on: bool) -> None:
        self.settings.sounds = bool(on)
        for device in (self._active, self._ringer):
            if device is not None:
                device.mixer.enabled = self.settings.sounds

    def levels(self, *, peak: bool = False) -> tuple[float, float]:
        """(input, output) level 0..1 of the active device (0, 0 without one): the latest
        frame's, or with ``peak`` the highest since the previous ``peak`` read (one reader:
        a meter that polls less often than every frame and must not miss a short peak)."""
        device = self._active or self._ringer
        if device is None:
            return (0.0, 0.0)
        return device.levels.peak_since_last_read() if peak else device.levels.read()

    @property
    def uses_sound_card(self) -> bool:
        """True when calls use PortAudio devices (not files or the silent device)."""
        return self.backend == "pyaudio" and self._factory is None

    async def start_ringing(self, kind: Literal["ringtone", "ringback"] = "ringtone") -> None:
        """Play the ringtone (offer pending) or ringback (outbound call alerting) on the
        speaker. No-op when sounds are off, without a sound card, or while a call has the
        device."""
        if not self.settings.sounds or not self.uses_sound_card or self._device_taken():
            return
        try:
            device = await asyncio.to_thread(self._open_device, None)
        except OperatorError as exc:
            self._emit("error", exc)
            return
        if self._device_taken():  # a call or another ringer won the race while we opened
            await self._stop_device(device)
            return
        device.mixer.enabled = True
        device.mixer.play(ringtone() if kind == "ringtone" else ringback())
        self._ringer = device

    def _device_taken(self) -> bool:
        return self._active is not None or self._ringer is not None

    async def stop_ringing(self) -> None:
        device, self._ringer = self._ringer, None
        if device is not None:
            device.mixer.stop_all()
            await self._stop_device(device)

    async def _stop_device(self, device: AudioDevice) -> None:
        """Stop a device in a worker thread; :meth:`close` waits for every such stop."""
        future = asyncio.ensure_future(asyncio.to_thread(device.stop))
        self._stops.add(future)
        try:
            await asyncio.shield(future)
        finally:
            if future.done():
                self._stops.discard(future)

    # ------------------------------------------------------------------ tests

    async def test_speaker(self, seconds: float = 2.0) -> None:
        """Play a 1 kHz test tone on the selected speaker."""
        device = await self._idle_device("speaker test")
        try:
            tone = test_tone(seconds=seconds)
            device.mixer.enabled = True
            device.mixer.play(tone)
            await asyncio.sleep(seconds + 0.1)
        finally:
            await self._stop_device(device)

    async def test_microphone(self, seconds: float = 3.0) -> MicrophoneTest:
        """Record ``seconds`` from the microphone, then play the recording back."""
        device = await self._idle_device("microphone test")
        frames: list[NDArray[np.int16]] = []
        levels: list[float] = []
        try:
            wanted = int(seconds * 50)
            while len(frames) < wanted:
                await asyncio.sleep(0.02)
                while (pcm := device.read_frame()) is not None and len(frames) < wanted:
                    frames.append(np.array(pcm, copy=True))
                    levels.append(frame_level(pcm))
            # Play it back at the device's pace (the jitter buffer holds at most 200 ms).
            loop = asyncio.get_running_loop()
            deadline = loop.time()
            for pcm in frames:
                device.write_frame(pcm)
                deadline += 0.020
                await asyncio.sleep(max(0.0, deadline - loop.time()))
            await asyncio.sleep(0.2)  # the playout delay, then the last frames are out
        finally:
            await self._stop_device(device)
        return MicrophoneTest(
            seconds=len(frames) / 50,
            peak_level=max(levels, default=0.0),
            mean_level=float(np.mean(levels)) if levels else 0.0,
            frames=len(frames),
        )

    async def _idle_device(self, what: str) -> AudioDevice:
        if self._active is not None:
            raise OperatorError(ClientErrorCode.INVALID_STATE, f"no {what} during a call")
        return await asyncio.to_thread(self._open_device, None)

    # ------------------------------------------------------------------ call devices

    def _open_device(self, call: Call | None) -> AudioDevice:
        """Create and start a device (blocking: call it in a worker thread)."""
        try:
            if self._factory is not None and call is not None:
                device = self._factory(call)
            elif self.backend == "null":
                device = NullAudioDevice()
            else:
                from softphone.media.pyaudio_device import PyAudioDevice

                device = PyAudioDevice(
                    self.system,
                    self.settings.input,
                    self.settings.output,
                    rate=self.settings.device_rate,
                )
            device.mixer.enabled = self.settings.sounds
            device.start()
        except AudioDeviceError as exc:
            raise OperatorError(exc.code, exc.message, exc) from exc
        return device

    async def open_for_call(self, call: Call) -> AudioDevice:
        """The device of ``call`` (the ringer is released first); falls back to a silent
        device with an ``error`` event if the sound card cannot be used."""
        await self.stop_ringing()
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_device, call))
        try:
            device = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The call ended while the device was opening: stop it once it is open.
            opening.add_done_callback(self._stop_abandoned)
            raise
        except OperatorError as exc:
            self._emit("error", exc)
            device = NullAudioDevice()
            device.start()
        self._active = device
        self.processor = self._new_processor()
        return device

    async def recover_lost(self, call: Call, lost: AudioDevice) -> AudioDevice:
        """The call's sound card stopped: open the chosen devices afresh (it may have been a
        glitch of the sound server), else continue on the silent stand-in (picking a device
        with ``select_input``/``select_output`` then replaces it). The dead device is
        stopped in the background: a stream whose server vanished may take time to close."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_device, call))
        try:
            new = await asyncio.wait_for(asyncio.shield(opening), 5.0)
        except (OperatorError, TimeoutError):
            opening.add_done_callback(self._stop_abandoned)
            new = NullAudioDevice()
            new.start()
        if self._active is lost or self._active is None:
            self._active = new
            self.processor = self._new_processor()
        self._stops.add(asyncio.ensure_future(asyncio.to_thread(lost.stop)))
        return new

    def _stop_abandoned(self, opening: asyncio.Future[AudioDevice]) -> None:
        if opening.cancelled() or opening.exception() is not None:
            return
        device = opening.result()
        self._stops.add(asyncio.ensure_future(asyncio.to_thread(device.stop)))

    async def release(self, device: AudioDevice) -> None:
        if self._active is device:
            self._active = None
            self.processor = None
        await self._stop_device(device)

    async def close(self) -> None:
        await self.stop_ringing()
        if self._active is not None:
            await self.release(self._active)
        if self._stops:  # devices still being stopped by other tasks
            await asyncio.gather(*self._stops, return_exceptions=True)
            self._stops.clear()
        if self._system is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._system.close)
