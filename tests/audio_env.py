"""Real PortAudio without a sound card: a private PulseAudio daemon and an ALSA config.

The measured "recipe H" for PortAudio in CI: ALSA ``type file`` PCMs for the data (capture reads
a raw file of our own, playback writes one, both bit-exact and without priming zeros),
stacked on PulseAudio null sinks that give them a real-time clock (0.99-1.01x).

    paced_in    capture: reads <root>/paced_in.raw   (clocked by sink in48's monitor)
    paced_in2   capture: reads <root>/paced_in2.raw  (a second microphone, same clock)
    paced_out   playback: writes <root>/paced_out.raw (clocked by sink out48)
    paced_out2  playback: writes <root>/paced_out2.raw (a second speaker)
    paced_in8 / paced_out8   the same on sinks made at 8000 Hz
    dead_in / dead_out       listed, but opening fails (PulseAudio has no such source/sink)
    default     asym: paced_out / paced_in
    paced_card  the same, as one sound card's device with both directions (hw:0,0 on a
                real machine): opened at its own rate, both directions in one stream
    pulse       the same, under the name of the PulseAudio plugin's device (the engine's
                rate="auto" opens it at 8000 Hz, as on a desktop)

All files are raw signed 16-bit little-endian mono at the *stream's* rate (the file plugin
sits above any conversion): a device opened at 48000 Hz reads ``paced_in.raw`` as 48 kHz.
PortAudio reports every PulseAudio-backed PCM at 44100 Hz and 32 channels (the ``pulse``
plugin accepts any rate and PortAudio probes 44100 first), so ``PyAudioDevice(rate=None)``
runs at 44.1 kHz here, ``rate=48000`` / ``rate=8000`` select the other rates, and the
engine's default ``rate="auto"`` opens them at 48 kHz (``AUTO_RATE``). (A
``plug`` PCM with a fixed slave rate would make PortAudio report 48000 or 8000, and a
``multi`` PCM would pin the channel count, but PortAudio 19.6 streams on such a PCM over
the pulse plugin never call back, though ALSA itself reads them fine (measured; PortAudio
probably takes the mmap path there): no such devices here.)

Pitfalls this module takes care of: ``ALSA_CONFIG_PATH`` is set before any ``PyAudio()``
of the test process; ``pcm.!default`` is always defined (PortAudio 19.6 aborts without
it); no PCM is called ``null`` or ``file`` (PortAudio hides those); every infile exists
before PortAudio starts; sinks use ``norewinds=1``. After its infile ends a capture
repeats stale data, so :meth:`VirtualAudio.write_input` pads with silence.

Use the session fixture ``virtual_audio`` (register with
``pytest_plugins = ["tests.audio_env"]``), or ``VirtualAudio.start()`` / ``.stop()``
outside pytest (benchmarks). Missing tools skip the tests with the apt/pip command to run;
with ``AUDIN_REQUIRE_AUDIO=1`` in the environment they fail instead (CI).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest
from numpy.typing import NDArray

__all__ = [
    "VirtualAudio",
    "VirtualAudioUnavailable",
    "bandlimited_noise",
    "fft_resample",
    "find_lag",
    "level_db",
    "provide_virtual_audio",
    "virtual_audio",
    "wait_for",
]

MIC: Final = "paced_in"
MIC2: Final = "paced_in2"
SPEAKER: Final = "paced_out"
SPEAKER2: Final = "paced_out2"
MIC_8K: Final = "paced_in8"
SPEAKER_8K: Final = "paced_out8"
SERVER: Final = "pulse"  # the sound server's own device (data in paced_in / paced_out)
CARD: Final = "paced_card"  # one device with both directions (data in paced_in / paced_out)
DEAD_MIC: Final = "dead_in"
DEAD_SPEAKER: Final = "dead_out"

INPUTS: Final = (MIC, MIC2, MIC_8K)
OUTPUTS: Final = (SPEAKER, SPEAKER2, SPEAKER_8K)
PORTAUDIO_PULSE_RATE: Final = 44100  # what PortAudio reports for the PulseAudio PCMs
AUTO_RATE: Final = 48000
"""What the engine's default rate policy ("auto") opens the paced devices at (ALSA devices
that take 48 kHz: softphone.media.pyaudio_device.ALSA_CARD_RATE; "pulse" is at 8000)."""

READY_TIMEOUT: Final = 10.0  # seconds for the daemon to answer `pactl info`
REQUIRE_ENV: Final = "AUDIN_REQUIRE_AUDIO"

_APT_HINT: Final = (
    "apt-get install pulseaudio pulseaudio-utils libasound2-plugins portaudio19-dev "
    "(then pip install pyaudio)"
)


class VirtualAudioUnavailable(RuntimeError):
    """A tool the virtual devices need is missing; the message says what to install."""


def _check_tools() -> None:
    missing = [tool for tool in ("pulseaudio", "pactl") if shutil.which(tool) is None]
    if missing:
        raise VirtualAudioUnavailable(f"{' and '.join(missing)} not found: {_APT_HINT}")
    plugin_dirs = [
        *glob.glob("/usr/lib/*/alsa-lib"),
        "/usr/lib/alsa-lib",
        "/usr/lib64/alsa-lib",
        "/usr/local/lib/alsa-lib",
    ]
    if not any(Path(d, "libasound_module_pcm_pulse.so").exists() for d in plugin_dirs):
        raise VirtualAudioUnavailable(
            f"the ALSA pulse plugin (libasound2-plugins) is not installed: {_APT_HINT}"
        )
    try:
        import pyaudio  # type: ignore[import-untyped]  # noqa: F401
    except (ImportError, OSError) as exc:
        raise VirtualAudioUnavailable(f"PyAudio cannot be imported ({exc}): {_APT_HINT}") from exc


@dataclass
class VirtualAudio:
    """A running private PulseAudio daemon plus the ALSA config that uses it."""

    root: Path
    process: subprocess.Popen[bytes] | None = None
    previous_config: str | None = None
    owns_root: bool = False  # a temporary folder of our own: removed by stop()
    _extra: dict[str, str] = field(default_factory=dict)

    MIC = MIC
    MIC2 = MIC2
    SPEAKER = SPEAKER
    SPEAKER2 = SPEAKER2
    MIC_8K = MIC_8K
    SPEAKER_8K = SPEAKER_8K
    DEAD_MIC = DEAD_MIC
    SERVER = SERVER
    CARD = CARD
    DEAD_SPEAKER = DEAD_SPEAKER

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(cls, root: Path | None = None) -> VirtualAudio:
        """Start the daemon, write the config, set ``ALSA_CONFIG_PATH`` (in ``os.environ``).

        Must run before the first ``pyaudio.PyAudio()`` of the process. Raises
        :class:`VirtualAudioUnavailable` if a tool is missing, ``RuntimeError`` if the
        daemon does not come up.
        """
        _check_tools()
        owns_root = root is None or len(str(root)) > 80  # unix socket paths: 108 bytes max
        if owns_root:
            root = Path(tempfile.mkdtemp(prefix="audin-va-"))
        assert root is not None
        env = cls(root=root, owns_root=owns_root)
        try:
            env._launch()
        except BaseException:
            env.stop()
            raise
        return env

    @property
    def socket(self) -> Path:
        return self.root / "native"

    @property
    def server(self) -> str:
        return f"unix:{self.socket}"

    @property
    def config_path(self) -> Path:
        return self.root / "asound.conf"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _launch(self) -> None:
        for sub in ("home", "runtime", "state", "xdg"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "xdg").chmod(0o700)
        env = {
            **os.environ,
            "HOME": str(self.root / "home"),
            "XDG_RUNTIME_DIR": str(self.root / "xdg"),
            "PULSE_RUNTIME_PATH": str(self.root / "runtime"),
            "PULSE_STATE_PATH": str(self.root / "state"),
        }
        env.pop("PULSE_SERVER", None)
        sinks = [("out48", 48000), ("in48", 48000), ("out8", 8000), ("in8", 8000)]
        args = [
            "pulseaudio",
            "-n",  # no default.pa: only the modules below
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--enable-memfd=no",
            "--realtime=no",
            "--high-priority=no",
            "--log-target=stderr",
            "-L",
            f"module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
        ]
        for name, rate in sinks:
            args += [
                "-L",
                f"module-null-sink sink_name={name} format=s16le channels=1 rate={rate} "
                "norewinds=1",
            ]
        log = open(self.root / "pulseaudio.log", "wb")  # noqa: SIM115 (owned by the daemon)
        try:
            self.process = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        finally:
            log.close()
        try:
            self._wait_ready(env)
        except BaseException:
            self._terminate()
            raise
        for name in (*INPUTS,):
            self.write_input(name, np.zeros(0, dtype=np.int16), rate=48000, pad_seconds=1.0)
        self.write_config()
        self.previous_config = os.environ.get("ALSA_CONFIG_PATH")
        os.environ["ALSA_CONFIG_PATH"] = str(self.config_path)

    def crash_daemon(self) -> None:
        """Kill the sound server (SIGKILL): every open stream on it stalls, as when a USB
        headset is pulled or PulseAudio dies."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def restart_daemon(self) -> None:
        """Start the sound server again on the same socket and devices."""
        previous = self.previous_config
        self._launch()
        self.previous_config = previous

    def _wait_ready(self, env: dict[str, str]) -> None:
        assert self.process is not None
        env = {**env, "PULSE_SERVER": self.server}
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"pulseaudio exited with status {self.process.returncode}: {self.log()}"
                )
            probe = subprocess.run(
                ["pactl", "info"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=READY_TIMEOUT,
                check=False,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"pulseaudio did not answer within {READY_TIMEOUT:g} s: {self.log()}"
                )
            time.sleep(0.02)  # bounded readiness poll of an external daemon

    def log(self) -> str:
        path = self.root / "pulseaudio.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        """Terminate the daemon and restore ``ALSA_CONFIG_PATH``. Idempotent."""
        if os.environ.get("ALSA_CONFIG_PATH") == str(self.config_path):
            if self.previous_config is None:
                os.environ.pop("ALSA_CONFIG_PATH", None)
            else:
                os.environ["ALSA_CONFIG_PATH"] = self.previous_config
        self._terminate()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    # -- ALSA configuration ------------------------------------------------------------

    def config_text(self) -> str:
        server = self.server
        lines = [
            "# written by tests/audio_env.py: private PulseAudio null sinks + file PCMs",
            f'pcm.pa_out48 {{ type pulse server "{server}" device "out48" }}',
            f'pcm.pa_in48 {{ type pulse server "{server}" device "in48.monitor" }}',
            f'pcm.pa_out8 {{ type pulse server "{server}" device "out8" }}',
            f'pcm.pa_in8 {{ type pulse server "{server}" device "in8.monitor" }}',
            f'pcm.{DEAD_MIC} {{ type pulse server "{server}" device "no_such_source" }}',
            f'pcm.{DEAD_SPEAKER} {{ type pulse server "{server}" device "no_such_sink" }}',
        ]
        for name, slave in ((MIC, "pa_in48"), (MIC2, "pa_in48"), (MIC_8K, "pa_in8")):
            lines.append(
                f'pcm.{name} {{ type file slave.pcm "{slave}" infile "{self.input_path(name)}" '
                'file "/dev/null" format "raw" }'
            )
        for name, slave in ((SPEAKER, "pa_out48"), (SPEAKER2, "pa_out48"), (SPEAKER_8K, "pa_out8")):
            lines.append(
                f'pcm.{name} {{ type file slave.pcm "{slave}" file "{self.output_path(name)}" '
                'format "raw" }'
            )
        lines.extend(self._extra.values())
        lines.append(f'pcm.!default {{ type asym playback.pcm "{SPEAKER}" capture.pcm "{MIC}" }}')
        # What alsa-plugins' pulse.conf defines on a desktop, on the same files as default.
        lines.append(f'pcm.{SERVER} {{ type asym playback.pcm "{SPEAKER}" capture.pcm "{MIC}" }}')
        # A sound card's own device: capture and playback under one name, at its own rate.
        lines.append(f'pcm.{CARD} {{ type asym playback.pcm "{SPEAKER}" capture.pcm "{MIC}" }}')
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.config_text())
        tmp.replace(self.config_path)

    @contextlib.contextmanager
    def extra_input(self, name: str) -> Iterator[None]:
        """Add a capture PCM ``name`` to the config for the block (a hot-plugged microphone,
        as seen by a *fresh* PortAudio, e.g. ``AudioSystem.rescan``)."""
        path = self.root / f"{name}.raw"
        path.write_bytes(bytes(960))
        self._extra[name] = (
            f'pcm.{name} {{ type file slave.pcm "pa_in48" infile "{path}" '
            'file "/dev/null" format "raw" }'
        )
        self.write_config()
        try:
            yield
        finally:
            del self._extra[name]
            self.write_config()

    # -- data --------------------------------------------------------------------------

    def input_path(self, name: str = MIC) -> Path:
        return self.root / f"{name}.raw"

    def output_path(self, name: str = SPEAKER) -> Path:
        return self.root / f"{name}.raw"

    def write_input(
        self,
        name: str,
        samples: NDArray[np.int16],
        *,
        rate: int,
        pad_seconds: float = 20.0,
    ) -> None:
        """The signal a microphone will capture from the start of its next stream: raw s16le
        mono at the rate the stream will be opened at, followed by ``pad_seconds`` of
        silence (a capture that runs past the end of the file repeats stale data)."""
        pad = np.zeros(int(rate * pad_seconds), dtype="<i2")
        data = np.concatenate([np.asarray(samples, dtype="<i2"), pad])
        tmp = self.input_path(name).with_suffix(".tmp")
        tmp.write_bytes(data.tobytes())
        tmp.replace(self.input_path(name))

    def read_output(self, name: str = SPEAKER) -> NDArray[np.int16]:
        """Everything the last stream on ``name`` played (s16le mono at its rate); read it
        after the stream is closed. Empty if nothing was played."""
        path = self.output_path(name)
        if not path.exists():
            return np.zeros(0, dtype=np.int16)
        raw = path.read_bytes()
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.int16)

    def clear_output(self, name: str = SPEAKER) -> None:
        self.output_path(name).unlink(missing_ok=True)


class _Shared:
    """The process's one running :class:`VirtualAudio`, reference-counted."""

    env: VirtualAudio | None = None
    users = 0


def acquire(root: Path | None = None) -> VirtualAudio:
    """The process's virtual devices, started on first use (reference-counted)."""
    if _Shared.env is None:
        _Shared.env = VirtualAudio.start(root)
    _Shared.users += 1
    return _Shared.env


def release() -> None:
    """Drop one reference; the last one stops the daemon."""
    _Shared.users = max(0, _Shared.users - 1)
    if _Shared.users == 0 and _Shared.env is not None:
        env, _Shared.env = _Shared.env, None
        env.stop()


def provide_virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    """Body of the ``virtual_audio`` fixture: start (or share) the devices, skip - or fail
    with ``AUDIN_REQUIRE_AUDIO=1`` - when a tool is missing, release at teardown.

    A test module may define its own session fixture as ``yield from
    provide_virtual_audio(tmp_path_factory)``; every copy shares one daemon.
    """
    try:
        env = acquire(tmp_path_factory.mktemp("va"))
    except VirtualAudioUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"virtual audio devices required ({REQUIRE_ENV}=1) but: {exc}")
        pytest.skip(f"no virtual audio devices: {exc}")
    try:
        yield env
    finally:
        release()


@pytest.fixture(scope="session")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    """Session-wide virtual sound devices (see the module docstring); skipped when the tools
    are missing, unless ``AUDIN_REQUIRE_AUDIO=1``. Registered by
    ``pytest_plugins = ["tests.audio_env"]`` in ``tests/conftest.py``."""
    yield from provide_virtual_audio(tmp_path_factory)


# -- signal helpers ----------------------------------------------------------------------


def bandlimited_noise(
    seconds: float,
    rate: int,
    *,
    seed: int = 1,
    low: float = 300.0,
    high: float = 3000.0,
    rms: float = 4000.0,
) -> NDArray[np.int16]:
    """Gaussian noise limited to ``low..high`` Hz by zeroing FFT bins (a telephone-band
    signal: it survives 8 kHz resampling, and unlike a tone it matches at one lag only)."""
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    x = np.fft.irfft(spectrum, n)
    x *= rms / (np.sqrt(np.mean(x**2)) + 1e-12)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def fft_resample(x: NDArray[np.int16] | NDArray[np.float64], n_out: int) -> NDArray[np.float64]:
    """Band-limited resampling by FFT truncation/zero-padding (exact for band-limited
    periodic signals; fine for the short noise bursts here). A reference independent of
    the project's Resampler."""
    n = len(x)
    spectrum = np.fft.rfft(np.asarray(x, dtype=np.float64))
    out = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    k = min(len(out), len(spectrum))
    out[:k] = spectrum[:k]
    return np.fft.irfft(out, n_out) * (n_out / n)


def find_lag(
    source: NDArray[np.int16] | NDArray[np.float64],
    recording: NDArray[np.int16] | NDArray[np.float64],
) -> tuple[int, float]:
    """Lag (samples, >= 0) of ``source`` inside ``recording`` and the normalised correlation
    of the aligned segment (1.0 = same waveform)."""
    src = np.asarray(source, dtype=np.float64)
    rec = np.asarray(recording, dtype=np.float64)
    n = len(src) + len(rec)
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(src, n)), n)
    lag = int(np.argmax(corr[: len(rec)]))
    segment = rec[lag : lag + len(src)]
    ref = src[: len(segment)]
    score = float(np.dot(segment, ref) / (np.linalg.norm(segment) * np.linalg.norm(ref) + 1e-9))
    return lag, score


def level_db(
    a: NDArray[np.int16] | NDArray[np.float64], b: NDArray[np.int16] | NDArray[np.float64]
) -> float:
    """RMS level of ``a`` relative to ``b`` in dB."""
    ra = np.sqrt(np.mean(np.asarray(a, dtype=np.float64) ** 2))
    rb = np.sqrt(np.mean(np.asarray(b, dtype=np.float64) ** 2))
    return float(20 * np.log10((ra + 1e-9) / (rb + 1e-9)))


def wait_for(condition: object, timeout: float, what: str = "condition") -> None:
    """Poll ``condition()`` every 5 ms until true; ``AssertionError`` after ``timeout`` s."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


# -- a scripted stand-in for pyaudio.PyAudio (logic tests without PortAudio) -------------


@dataclass
class FakeDevice:
    name: str
    inputs: int = 0
    outputs: int = 0
    rate: float = 48000.0
    host_api: int = 0
    channels_ok: tuple[int, ...] | None = None  # channel counts is_format_supported accepts
    fail_open: tuple[int, str] | None = None  # (PortAudio code, text) raised by open()


class FakeStream:
    """Records what the device asked for; a test drives ``callback`` by hand."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.callback = kwargs["stream_callback"]
        self.started = False
        self.closed = False

    def start_stream(self) -> None:
        self.started = True
        # A real stream calls back soon after starting; the first call is enough for a
        # switch to go ahead.
        frames = int(self.kwargs["frames_per_buffer"])
        channels = int(self.kwargs["channels"])
        data = bytes(2 * frames * channels) if self.kwargs.get("input") else None
        self.callback(data, frames, {}, 0)

    def is_stopped(self) -> bool:
        return not self.started

    def stop_stream(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    def get_input_latency(self) -> float:
        return 0.0

    def get_output_latency(self) -> float:
        return 0.0


class FakePyAudio:
    """The subset of ``pyaudio.PyAudio`` that ``AudioSystem`` / ``PyAudioDevice`` use."""

    def __init__(
        self,
        devices: list[FakeDevice],
        *,
        default_input: int | None = None,
        default_output: int | None = None,
        host_apis: tuple[str, ...] = ("ALSA",),
        default_host_api: int = 0,
    ) -> None:
        self.devices = devices
        self.default_input = default_input
        self.default_output = default_output
        self.host_apis = host_apis
        self.default_host_api = default_host_api
        self.streams: list[FakeStream] = []
        self.terminated = False

    def get_host_api_count(self) -> int:
        return len(self.host_apis)

    def get_host_api_info_by_index(self, i: int) -> dict[str, object]:
        return {"index": i, "name": self.host_apis[i]}

    def get_default_host_api_info(self) -> dict[str, object]:
        return self.get_host_api_info_by_index(self.default_host_api)

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, i: int) -> dict[str, object]:
        d = self.devices[i]
        return {
            "index": i,
            "name": d.name,
            "hostApi": d.host_api,
            "maxInputChannels": d.inputs,
            "maxOutputChannels": d.outputs,
            "defaultSampleRate": d.rate,
        }

    def _default(self, index: int | None) -> dict[str, object]:
        if index is None:
            raise OSError("No Default Device Available")
        return self.get_device_info_by_index(index)

    def get_default_input_device_info(self) -> dict[str, object]:
        return self._default(self.default_input)

    def get_default_output_device_info(self) -> dict[str, object]:
        return self._default(self.default_output)

    def is_format_supported(self, rate: float, **kwargs: Any) -> bool:
        index = kwargs.get("input_device", kwargs.get("output_device"))
        channels = kwargs.get("input_channels", kwargs.get("output_channels"))
        d = self.devices[int(index)]
        if d.channels_ok is not None and channels not in d.channels_ok:
            raise ValueError(("Invalid number of channels", -9998))
        return True

    def open(self, **kwargs: Any) -> FakeStream:
        index = kwargs.get("input_device_index", kwargs.get("output_device_index"))
        d = self.devices[int(index)]
        if d.fail_open is not None:
            raise OSError(*d.fail_open)
        stream = FakeStream(kwargs)
        self.streams.append(stream)
        return stream

    def terminate(self) -> None:
        self.terminated = True
