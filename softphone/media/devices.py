"""Sound device discovery through PortAudio (PyAudio), without disturbing running streams.

:class:`AudioSystem` owns the process's one ``pyaudio.PyAudio`` instance, lists the devices
(:class:`DeviceInfo`) and resolves what the operator asked for (``--input 2``,
``--output "USB Headset"``, nothing = the system default) into one device, with a coded
:class:`~softphone.media.device.AudioDeviceError` that says what to do when it cannot.

PortAudio enumerates devices once, when it is initialised; seeing a headset plugged in
later needs a re-initialisation, and terminating PortAudio kills every open stream. So
:meth:`AudioSystem.rescan` enumerates in a short-lived child process (a fresh PortAudio)
and compares with what this process knows: the call in progress keeps its streams. The
new devices can be opened once the in-process instance is re-created with
:meth:`AudioSystem.reload` (only possible while no stream is open).

PortAudio, ALSA and JACK print diagnostics on file descriptor 2 (Debian's PortAudio tries a
JACK server at start-up and prints about five lines when there is none). Everything here
that can talk to them runs inside :func:`quiet_stderr`, and alsa-lib's messages during a
call (xrun recoveries, from PortAudio's threads) go to a counting handler
(:func:`silence_alsa_messages`, installed with the first ``PyAudio``), so nothing reaches
the terminal of the TUI. A rescan takes 60-110 ms (a Python start-up and a PortAudio
initialisation in the child).

Error codes (strings, stable; also meant for ``AudioErrorCode``): :data:`NO_MICROPHONE`,
:data:`MICROPHONE_UNAVAILABLE`, :data:`NO_OUTPUT_DEVICE`, :data:`OUTPUT_UNAVAILABLE`,
:data:`DEVICE_NOT_FOUND`, :data:`DEVICE_AMBIGUOUS`, :data:`DEVICE_SCAN_FAILED`,
:data:`AUDIO_BACKEND_UNAVAILABLE`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Final, Literal, Self

from softphone.media.device import AudioDeviceError, AudioErrorCode

__all__ = [
    "AUDIO_BACKEND_UNAVAILABLE",
    "DEVICE_AMBIGUOUS",
    "DEVICE_NOT_FOUND",
    "DEVICE_SCAN_FAILED",
    "MICROPHONE_UNAVAILABLE",
    "NO_MICROPHONE",
    "NO_OUTPUT_DEVICE",
    "OUTPUT_UNAVAILABLE",
    "AudioSystem",
    "DeviceInfo",
    "DeviceSpec",
    "DevicesChange",
    "alsa_message_count",
    "load_pyaudio",
    "quiet_stderr",
    "server_converts_rate",
    "silence_alsa_messages",
    "sound_server_running",
]

# -- error codes (to be folded into softphone.media.device.AudioErrorCode) ------------------

# Stable codes (documented on AudioErrorCode).
NO_MICROPHONE: Final = AudioErrorCode.NO_MICROPHONE
MICROPHONE_UNAVAILABLE: Final = AudioErrorCode.MICROPHONE_UNAVAILABLE
NO_OUTPUT_DEVICE: Final = (
    AudioErrorCode.NO_OUTPUT_DEVICE
)  # no output device at all / no default output
OUTPUT_UNAVAILABLE: Final = AudioErrorCode.OUTPUT_UNAVAILABLE
DEVICE_NOT_FOUND: Final = (
    AudioErrorCode.DEVICE_NOT_FOUND
)  # the index / name asked for matches nothing
DEVICE_AMBIGUOUS: Final = (
    AudioErrorCode.DEVICE_AMBIGUOUS
)  # the name asked for matches several devices
DEVICE_SCAN_FAILED: Final = AudioErrorCode.DEVICE_SCAN_FAILED
AUDIO_BACKEND_UNAVAILABLE: Final = (
    AudioErrorCode.AUDIO_BACKEND_UNAVAILABLE
)  # PyAudio/PortAudio won't load

RESCAN_TIMEOUT: Final = 10.0  # seconds the rescan child process may take
CLOSE_WAIT: Final = 3.0  # seconds close() waits for streams still being closed

DeviceSpec = int | str | None
"""How a device is asked for: ``None`` = system default, ``int`` = PortAudio index, ``str`` =
exact name, else a case-insensitive substring that matches a single device."""

Direction = Literal["input", "output"]

_INSTALL_HINT: Final = (
    "install PortAudio and PyAudio (Debian/Ubuntu: apt-get install libportaudio2, then "
    "pip install pyaudio; building PyAudio needs portaudio19-dev)"
)


# -- fd 2 silencing -----------------------------------------------------------------------


class _QuietState:
    """fd 2 redirect shared by every ``quiet_stderr`` block of the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved_fd: int | None = None

    def enter(self) -> None:
        with self.lock:
            if self.depth == 0:
                self.saved_fd = _redirect_fd2()
            self.depth += 1

    def exit(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0 and self.saved_fd is not None:
                saved, self.saved_fd = self.saved_fd, None
                try:
                    os.dup2(saved, 2)
                finally:
                    os.close(saved)


def _redirect_fd2() -> int | None:
    """Point fd 2 at /dev/null; return a duplicate of the old fd 2 (None if impossible)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        return None
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
    except OSError:
        os.close(saved)
        return None
    return saved


_quiet = _QuietState()


def point_stderr_at(fd: int) -> None:
    """Make ``fd`` the process's fd 2 for good (for example: the terminal went away).

    A :func:`quiet_stderr` block running meanwhile in another thread (a stream being
    opened) would otherwise put back, when it ends, the fd 2 it saved on entry: the old
    target. Its saved descriptor is re-pointed instead, and fd 2 stays silenced until the
    block ends."""
    with _quiet.lock:
        if _quiet.saved_fd is not None:
            os.dup2(fd, _quiet.saved_fd)
        else:
            os.dup2(fd, 2)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to ``/dev/null`` for the duration of the block.

    C libraries (PortAudio, ALSA, JACK) write to fd 2 directly, below ``sys.stderr``, so
    only an fd-level redirect silences them. fd 2 is restored when the block ends, also on
    an exception.

    Thread safety: fd 2 belongs to the whole process, so while any thread is inside the
    block, *every* thread's writes to fd 2 are discarded. Entering is reference-counted
    under a lock: overlapping blocks from several threads are safe and fd 2 comes back
    only when the last one leaves. Keep the blocks short (device enumeration, stream
    open/close), never around a whole call. If fd 2 is closed or cannot be duplicated the
    block runs without redirecting.
    """
    _quiet.enter()
    try:
        yield
    finally:
        _quiet.exit()


# -- ALSA's own error printer ----------------------------------------------------------------

# alsa-lib prints problems itself ("ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred")
# on fd 2, from PortAudio's stream threads, in the middle of a call: no quiet_stderr block
# can cover that without hiding the whole process's stderr. Replacing alsa-lib's error
# handler with one that only counts does. The handler is variadic in C; a ctypes callback
# that declares the fixed arguments only (and ignores them) is safe with every ABI we run on.
_AlsaHandler = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)


class _AlsaMessages:
    """Where the silenced alsa-lib messages are counted (diagnostics)."""

    count = 0
    installed = False
    handler: Any = None  # keeps the ctypes callback alive
    lock = threading.Lock()


def _count_alsa_message(
    file: bytes | None, line: int, function: bytes | None, err: int, fmt: bytes | None
) -> None:
    _AlsaMessages.count += 1


def silence_alsa_messages() -> bool:
    """Route alsa-lib's error messages to a counter instead of fd 2 (Linux; idempotent).

    Returns whether the handler is installed (False where there is no libasound).
    :func:`alsa_message_count` tells how many were swallowed.
    """
    with _AlsaMessages.lock:
        if _AlsaMessages.installed:
            return True
        if not sys.platform.startswith("linux"):
            return False
        try:
            lib = ctypes.CDLL("libasound.so.2")
            handler = _AlsaHandler(_count_alsa_message)
            lib.snd_lib_error_set_handler(handler)
        except (OSError, AttributeError):
            return False
        _AlsaMessages.handler = handler
        _AlsaMessages.installed = True
        return True


def alsa_message_count() -> int:
    """alsa-lib messages swallowed since :func:`silence_alsa_messages` (e.g. xrun recoveries)."""
    return _AlsaMessages.count


# -- PyAudio loading ----------------------------------------------------------------------


@functools.cache
def load_pyaudio() -> ModuleType:
    """Import ``pyaudio`` (once); ``AUDIO_BACKEND_UNAVAILABLE`` if it or PortAudio is missing."""
    try:
        with quiet_stderr():
            import pyaudio  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:
        raise AudioDeviceError(
            AUDIO_BACKEND_UNAVAILABLE,
            f"the sound system cannot be used: PyAudio/PortAudio did not load ({exc}); "
            f"{_INSTALL_HINT}",
        ) from exc
    module: ModuleType = pyaudio
    return module


def pa_error_text(exc: BaseException) -> str:
    """PortAudio's text from a PyAudio ``OSError(code, text)`` / ``ValueError((text, code))``."""
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return f"{args[1]} [PortAudio {args[0]}]"
    if len(args) == 1 and isinstance(args[0], tuple) and len(args[0]) == 2:
        text, code = args[0]
        return f"{text} [PortAudio {code}]"
    return str(exc) or type(exc).__name__


# -- device descriptions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One PortAudio device as this process's PortAudio instance sees it.

    ``index`` is only meaningful for the ``AudioSystem`` that listed it (and only until
    :meth:`AudioSystem.reload`): PortAudio renumbers devices when it re-enumerates.
    """

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate: float
    is_default_input: bool = False
    is_default_output: bool = False

    @property
    def is_input(self) -> bool:
        return self.max_input_channels > 0

    @property
    def is_output(self) -> bool:
        return self.max_output_channels > 0

    @property
    def key(self) -> tuple[str, str]:
        """Identity across re-enumerations: (host API, name)."""
        return (self.host_api, self.name)

    def describe(self) -> str:
        parts = []
        if self.is_input:
            parts.append(f"{self.max_input_channels} in")
        if self.is_output:
            parts.append(f"{self.max_output_channels} out")
        default = [
            d
            for d, on in (("input", self.is_default_input), ("output", self.is_default_output))
            if on
        ]
        extra = f", default {' and '.join(default)}" if default else ""
        return (
            f"[{self.index}] {self.name} ({self.host_api}, {', '.join(parts) or 'no channels'}, "
            f"{self.default_sample_rate:g} Hz{extra})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "host_api": self.host_api,
            "max_input_channels": self.max_input_channels,
            "max_output_channels": self.max_output_channels,
            "default_sample_rate": self.default_sample_rate,
            "is_default_input": self.is_default_input,
            "is_default_output": self.is_default_output,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceInfo:
        return cls(
            index=int(data["index"]),
            name=str(data["name"]),
            host_api=str(data["host_api"]),
            max_input_channels=int(data["max_input_channels"]),
            max_output_channels=int(data["max_output_channels"]),
            default_sample_rate=float(data["default_sample_rate"]),
            is_default_input=bool(data["is_default_input"]),
            is_default_output=bool(data["is_default_output"]),
        )


# -- who converts sample rates -----------------------------------------------------------

SOUND_SERVER_DEVICES: Final = frozenset({"pulse", "pipewire"})
"""ALSA device names that are a sound server's own client plugin (alsa-plugins' ``pulse``,
PipeWire's ``pipewire``): the server converts whatever rate a stream is opened at."""
SERVER_DEFAULT_DEVICES: Final = frozenset({"default"})
"""ALSA device names that distributions route to the sound server while one runs."""


def sound_server_running(environ: Mapping[str, str] | None = None) -> bool:
    """True when a PulseAudio or PipeWire server is reachable the way their ALSA plugins
    look for one: ``PULSE_SERVER`` set, or the server's socket in ``XDG_RUNTIME_DIR``."""
    env = os.environ if environ is None else environ
    if env.get("PULSE_SERVER"):
        return True
    runtime = env.get("XDG_RUNTIME_DIR")
    if not runtime:
        return False
    return any(
        os.path.exists(os.path.join(runtime, *part))
        for part in (("pulse", "native"), ("pipewire-0",))
    )


def server_converts_rate(info: DeviceInfo, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``info`` is a sound server's device, so a stream opened at 8 kHz is
    converted by the server (PulseAudio's speex or PipeWire's resampler, in the server's
    process) rather than by ALSA's ``plug`` layer, whose default converter is linear
    interpolation (audible aliasing). ALSA only: ``pulse`` and ``pipewire`` always,
    ``default`` while a server runs (:func:`sound_server_running`); hardware devices and
    other host APIs (Core Audio, WASAPI...) are left at their own rate."""
    if info.host_api != "ALSA":
        return False
    if info.name in SOUND_SERVER_DEVICES:
        return True
    return info.name in SERVER_DEFAULT_DEVICES and sound_server_running(environ)


@dataclass(frozen=True, slots=True)
class DevicesChange:
    """What :meth:`AudioSystem.rescan` found compared with the previous list."""

    devices: tuple[DeviceInfo, ...]  # the fresh list (indices of the child's enumeration)
    added: tuple[DeviceInfo, ...]
    removed: tuple[DeviceInfo, ...]
    default_input: DeviceInfo | None
    default_output: DeviceInfo | None
    default_input_changed: bool
    default_output_changed: bool
    lost_active: bool  # a device named in ``active`` is gone
    seconds: float  # how long the scan took

    @property
    def changed(self) -> bool:
        return bool(
            self.added or self.removed or self.default_input_changed or self.default_output_changed
        )


# Runs in the rescan child: a fresh PortAudio, JSON on stdout. stderr is discarded by the
# parent; fd 2 is also pointed at /dev/null here in case the parent's was inherited.
_SCAN_SCRIPT: Final = r"""
import json, os, sys
fd = os.open(os.devnull, os.O_WRONLY); os.dup2(fd, 2)
import pyaudio
pa = pyaudio.PyAudio()
try:
    apis = [pa.get_host_api_info_by_index(i)["name"] for i in range(pa.get_host_api_count())]
    def default(fn):
        try:
            return int(fn()["index"])
        except (IOError, OSError):
            return -1
    din = default(pa.get_default_input_device_info)
    dout = default(pa.get_default_output_device_info)
    devs = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        devs.append({
            "index": i, "name": d["name"], "host_api": apis[d["hostApi"]],
            "max_input_channels": d["maxInputChannels"],
            "max_output_channels": d["maxOutputChannels"],
            "default_sample_rate": d["defaultSampleRate"],
            "is_default_input": i == din, "is_default_output": i == dout,
        })
finally:
    pa.terminate()
sys.stdout.write(json.dumps(devs))
"""


def _list_devices(pa: Any) -> list[DeviceInfo]:
    """Enumerate through a live ``PyAudio`` instance (call inside ``quiet_stderr``)."""
    apis = [str(pa.get_host_api_info_by_index(i)["name"]) for i in range(pa.get_host_api_count())]

    def default(fn: Any) -> int:
        try:
            return int(fn()["index"])
        except OSError:  # PyAudio raises IOError when there is no default device
            return -1

    din = default(pa.get_default_input_device_info)
    dout = default(pa.get_default_output_device_info)
    out = []
    for i in range(int(pa.get_device_count())):
        d = pa.get_device_info_by_index(i)
        api = int(d["hostApi"])
        out.append(
            DeviceInfo(
                index=i,
                name=str(d["name"]),
                host_api=apis[api] if 0 <= api < len(apis) else str(api),
                max_input_channels=int(d["maxInputChannels"]),
                max_output_channels=int(d["maxOutputChannels"]),
                default_sample_rate=float(d["defaultSampleRate"]),
                is_default_input=i == din,
                is_default_output=i == dout,
            )
        )
    return out


def _default_host_api(pa: Any) -> str | None:
    try:
        return str(pa.get_default_host_api_info()["name"])
    except (OSError, KeyError):
        return None


def _names(devices: Sequence[DeviceInfo]) -> str:
    if not devices:
        return "none"
    return "; ".join(d.describe() for d in devices)


class AudioSystem:
    """The process's PortAudio: device list, device lookup, rescans.

    One instance per process is the intended use (PortAudio itself is a process-wide
    singleton). ``pyaudio.PyAudio`` is created lazily on first use, inside
    :func:`quiet_stderr`. Thread-safe. ``close`` terminates PortAudio: streams still open
    are stopped by PortAudio, so close the devices first.

    ``backend`` replaces ``pyaudio.PyAudio()`` with an object offering the same methods
    (tests); ``rescan_command`` replaces the rescan child command (tests).
    """

    def __init__(
        self,
        *,
        backend: Any = None,
        rescan_command: Sequence[str] | None = None,
        rescan_timeout: float = RESCAN_TIMEOUT,
    ) -> None:
        self._pa: Any = backend
        self._lock = threading.RLock()
        self._streams_closed = threading.Condition(self._lock)
        self._devices: list[DeviceInfo] | None = None
        self._known: tuple[DeviceInfo, ...] | None = None  # last list seen (rescan baseline)
        self._open_streams = 0
        self._closed = False
        self._rescan_command = (
            list(rescan_command)
            if rescan_command is not None
            else [sys.executable, "-c", _SCAN_SCRIPT]
        )
        self.rescan_timeout = rescan_timeout

    # -- PortAudio instance ------------------------------------------------------------

    @property
    def pyaudio(self) -> Any:
        """The live ``pyaudio.PyAudio`` (created on first use); ``AUDIO_BACKEND_UNAVAILABLE``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("AudioSystem was closed")
            if self._pa is None:
                module = load_pyaudio()
                silence_alsa_messages()
                try:
                    with quiet_stderr():
                        self._pa = module.PyAudio()
                except OSError as exc:
                    raise AudioDeviceError(
                        AUDIO_BACKEND_UNAVAILABLE,
                        f"the sound system did not start: {pa_error_text(exc)}; check the "
                        "ALSA/PulseAudio configuration (a broken ~/.asoundrc or ALSA_CONFIG_PATH "
                        "does this) or run without sound (file audio backend)",
                    ) from exc
            return self._pa

    def module(self) -> ModuleType:
        """The ``pyaudio`` module (constants such as ``paInt16``)."""
        return load_pyaudio()

    def stream_opened(self) -> None:
        """Bookkeeping for :meth:`reload`: a device opened a stream on this instance."""
        with self._lock:
            self._open_streams += 1

    def stream_closed(self) -> None:
        with self._streams_closed:
            self._open_streams = max(0, self._open_streams - 1)
            self._streams_closed.notify_all()

    @property
    def open_streams(self) -> int:
        return self._open_streams

    def reload(self) -> list[DeviceInfo]:
        """Re-initialise PortAudio to pick up devices plugged in since; returns the new list.

        Only while no stream is open (``RuntimeError`` otherwise): terminating PortAudio
        would stop them. Device indices change; resolve devices again afterwards.
        """
        with self._lock:
            if self._open_streams:
                raise RuntimeError(
                    f"cannot reload the sound system while {self._open_streams} stream(s) "
                    "are open; end the call first"
                )
            self._terminate()
            self._devices = None
            return self.devices()

    def close(self, timeout: float = CLOSE_WAIT) -> None:
        """Terminate PortAudio once every stream is closed. Idempotent.

        Terminating while a stream is open would deadlock: ``Pa_Terminate`` joins the
        stream's callback thread while holding the GIL that the callback waits for. So this
        waits up to ``timeout`` seconds for devices being stopped elsewhere; if streams are
        still open then, PortAudio is left to the end of the process instead.
        """
        with self._streams_closed:
            if self._closed:
                return
            self._closed = True
            self._streams_closed.wait_for(lambda: self._open_streams == 0, timeout)
            if self._open_streams == 0:
                self._terminate()

    def _terminate(self) -> None:
        pa, self._pa = self._pa, None
        if pa is not None:
            with quiet_stderr():
                pa.terminate()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- listing and lookup ------------------------------------------------------------

    def devices(self) -> list[DeviceInfo]:
        """Every device of this PortAudio instance (enumerated once; see :meth:`rescan`)."""
        with self._lock:
            if self._devices is None:
                pa = self.pyaudio
                with quiet_stderr():
                    self._devices = _list_devices(pa)
                if self._known is None:
                    self._known = tuple(self._devices)
            return list(self._devices)

    def inputs(self) -> list[DeviceInfo]:
        return [d for d in self.devices() if d.is_input]

    def outputs(self) -> list[DeviceInfo]:
        return [d for d in self.devices() if d.is_output]

    def find_input(self, spec: DeviceSpec = None) -> DeviceInfo:
        """The input device for ``spec`` (see :data:`DeviceSpec`); coded error if none."""
        return self._find(spec, "input")

    def find_output(self, spec: DeviceSpec = None) -> DeviceInfo:
        """The output device for ``spec`` (see :data:`DeviceSpec`); coded error if none."""
        return self._find(spec, "output")

    def _find(self, spec: DeviceSpec, direction: Direction) -> DeviceInfo:
        devices = self.devices()
        is_input = direction == "input"
        usable = [d for d in devices if (d.is_input if is_input else d.is_output)]
        none_code = NO_MICROPHONE if is_input else NO_OUTPUT_DEVICE
        what = "microphone (input device)" if is_input else "output device (speaker/headset)"
        flag = "--input" if is_input else "--output"
        if not usable:
            raise AudioDeviceError(
                none_code,
                f"no {what} found: connect one (or check that the sound server is running "
                f"and this user may use it), then try again; devices seen: {_names(devices)}",
            )
        if spec is None:
            for d in usable:
                if d.is_default_input if is_input else d.is_default_output:
                    return d
            raise AudioDeviceError(
                none_code,
                f"there is no default {what}: pick one with {flag} (index or name) among: "
                f"{_names(usable)}",
            )
        if isinstance(spec, bool) or not isinstance(spec, int | str):
            raise TypeError(f"device spec must be an int, a str or None, got {spec!r}")
        if isinstance(spec, int):
            match = next((d for d in devices if d.index == spec), None)
            if match is None:
                raise AudioDeviceError(
                    DEVICE_NOT_FOUND,
                    f"there is no audio device number {spec}; {direction} devices are: "
                    f"{_names(usable)}",
                )
            if match not in usable:
                raise AudioDeviceError(
                    DEVICE_NOT_FOUND,
                    f"audio device {spec} ({match.name}) has no {direction} channels; "
                    f"{direction} devices are: {_names(usable)}",
                )
            return match
        return self._find_by_name(spec, direction, usable)

    def _find_by_name(
        self, spec: str, direction: Direction, usable: list[DeviceInfo]
    ) -> DeviceInfo:
        default_api = _default_host_api(self.pyaudio)

        def narrow(candidates: list[DeviceInfo]) -> list[DeviceInfo]:
            # The same device often appears once per host API (MME, DirectSound, WASAPI on
            # Windows): prefer the default host API's entry before calling it ambiguous.
            if len(candidates) > 1 and default_api is not None:
                preferred = [d for d in candidates if d.host_api == default_api]
                if preferred:
                    return preferred
            return candidates

        for found in (
            [d for d in usable if d.name == spec],
            [d for d in usable if d.name.casefold() == spec.casefold()],
            [d for d in usable if spec.casefold() in d.name.casefold()],
        ):
            candidates = narrow(found)
            if len(candidates) == 1:
                return candidates[0]
            if len(candidates) > 1:
                raise AudioDeviceError(
                    DEVICE_AMBIGUOUS,
                    f"{spec!r} matches {len(candidates)} {direction} devices: "
                    f"{_names(candidates)}; give the full name or the number",
                )
        raise AudioDeviceError(
            DEVICE_NOT_FOUND,
            f"no {direction} device named {spec!r}; {direction} devices are: {_names(usable)}"
            " (give a number or a part of the name)",
        )

    # -- rescan ------------------------------------------------------------------------

    def scan_devices(self) -> list[DeviceInfo]:
        """Enumerate in a fresh PortAudio in a child process (see module docstring).

        Blocking (tens of milliseconds): call it from a worker thread, not the event loop.
        ``DEVICE_SCAN_FAILED`` if the child fails or times out.
        """
        try:
            done = subprocess.run(  # noqa: S603 (fixed command: this interpreter + script)
                self._rescan_command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=self.rescan_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AudioDeviceError(
                DEVICE_SCAN_FAILED,
                f"the device scan did not finish within {self.rescan_timeout:g} s (the sound "
                "server may be hung); the current devices stay in use",
            ) from exc
        except OSError as exc:
            raise AudioDeviceError(
                DEVICE_SCAN_FAILED, f"the device scan could not start: {exc}"
            ) from exc
        if done.returncode != 0:
            raise AudioDeviceError(
                DEVICE_SCAN_FAILED,
                f"the device scan failed (exit status {done.returncode}); the current devices "
                "stay in use",
            )
        try:
            rows = json.loads(done.stdout)
            return [DeviceInfo.from_json(row) for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise AudioDeviceError(
                DEVICE_SCAN_FAILED, f"the device scan returned unreadable output: {exc}"
            ) from exc

    def rescan(self, active: Iterable[str] = ()) -> DevicesChange:
        """Compare a fresh enumeration with the previous one (the first call compares with
        this instance's own list). ``active``: names of the devices in use; ``lost_active``
        tells whether one of them disappeared. Open streams are not touched.
        """
        with self._lock:
            baseline = self._known
        if baseline is None:
            baseline = tuple(self.devices())
        started = time.monotonic()
        fresh = tuple(self.scan_devices())
        seconds = time.monotonic() - started
        old_keys = {d.key for d in baseline}
        new_keys = {d.key for d in fresh}
        old_din = next((d for d in baseline if d.is_default_input), None)
        old_dout = next((d for d in baseline if d.is_default_output), None)
        din = next((d for d in fresh if d.is_default_input), None)
        dout = next((d for d in fresh if d.is_default_output), None)
        fresh_names = {d.name for d in fresh}
        change = DevicesChange(
            devices=fresh,
            added=tuple(d for d in fresh if d.key not in old_keys),
            removed=tuple(d for d in baseline if d.key not in new_keys),
            default_input=din,
            default_output=dout,
            default_input_changed=(old_din.key if old_din else None) != (din.key if din else None),
            default_output_changed=(old_dout.key if old_dout else None)
            != (dout.key if dout else None),
            lost_active=any(name not in fresh_names for name in active),
            seconds=seconds,
        )
        with self._lock:
            self._known = fresh
        return change

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._pa is not None else "idle")
        return f"AudioSystem({state}, open_streams={self._open_streams})"
