"""A WAV-file audio device: play a file as the microphone, record what the far end sends.

:class:`FileAudioDevice` is for headless calls and tests. Its clock thread ticks every
20 ms (see :class:`~softphone.media.device.ClockedAudioDevice`) and on tick ``n``

1. pushes frame ``n`` of the play file (160 samples; silence after the end) to ``capture``,
2. pops one frame from ``playback`` and appends it to the record file as frame ``n``.

So the capture and record timelines are aligned tick by tick: a signal captured at tick
``n`` that comes back through an echo and is played at tick ``n + k`` sits exactly ``k``
frames (``k * 160`` samples) after its position in the play file. That ``k`` is the whole
round trip as a speaker would emit it: engine, network, far end *and* the playout buffer
(prefill ``prefill_frames``). Tests measure round-trip delay this way, so nothing here may
reorder, skip or duplicate a tick: every tick writes exactly one frame (silence when
nothing is buffered), including ticks run by ``advance`` and with ``realtime=False``.
"""

from __future__ import annotations

import os
import threading
import wave
from typing import BinaryIO, Final

import numpy as np
from numpy.typing import NDArray

from softphone.media.device import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioDeviceError,
    AudioErrorCode,
    ClockedAudioDevice,
)

__all__ = ["FileAudioDevice"]

_SAMPLE_WIDTH: Final = 2  # bytes: 16-bit PCM


def _convert_hint(name: str) -> str:
    return f"convert with: sox {name} -r {SAMPLE_RATE} -c 1 -b 16 out.wav"


def _load_play_file(name: str) -> tuple[NDArray[np.int16], int]:
    """Read a 16-bit 8 kHz mono/stereo WAV; return (frames of shape (n, 160), sample count)."""
    try:
        # Open the file ourselves: wave's own path handling misbehaves on errors in 3.11.
        with open(name, "rb") as raw, wave.open(raw, "rb") as reader:
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            rate = reader.getframerate()
            problems = []
            if rate != SAMPLE_RATE:
                problems.append(f"{rate} Hz")
            if width != _SAMPLE_WIDTH:
                problems.append(f"{width * 8}-bit")
            if channels not in (1, 2):
                problems.append(f"{channels} channels")
            data = b"" if problems else reader.readframes(reader.getnframes())
    except FileNotFoundError:
        raise AudioDeviceError(
            AudioErrorCode.AUDIO_FILE_NOT_FOUND, f"{name}: no such file (the WAV file to play)"
        ) from None
    except (wave.Error, EOFError) as exc:
        raise AudioDeviceError(
            AudioErrorCode.AUDIO_FILE_INVALID,
            f"{name} is not a PCM WAV file the file backend can read ({exc or 'truncated'}); "
            f"it needs 16-bit PCM WAV at {SAMPLE_RATE} Hz, mono or stereo ({_convert_hint(name)})",
        ) from exc
    except OSError as exc:
        raise AudioDeviceError(
            AudioErrorCode.AUDIO_FILE_INVALID,
            f"cannot read {name}: {exc.strerror or exc}",
        ) from exc
    if problems:
        raise AudioDeviceError(
            AudioErrorCode.AUDIO_FILE_INVALID,
            f"{name} is {' and '.join(problems)}; the file backend needs 16-bit PCM at "
            f"{SAMPLE_RATE} Hz, mono or stereo ({_convert_hint(name)})",
        )
    # wave hands back native-order samples; drop a trailing partial sample frame if any.
    usable = len(data) - len(data) % (channels * _SAMPLE_WIDTH)
    samples = np.frombuffer(data, dtype=np.int16, count=usable // _SAMPLE_WIDTH)
    if channels == 2:
        pairs = samples.reshape(-1, 2).astype(np.int32)
        samples = ((pairs[:, 0] + pairs[:, 1]) >> 1).astype(np.int16)  # average, rounding down
    count = samples.size
    n_frames = -(-count // FRAME_SAMPLES)
    frames = np.zeros((n_frames, FRAME_SAMPLES), dtype=np.int16)
    frames.reshape(-1)[:count] = samples
    frames.flags.writeable = False
    return frames, count


def _open_record_file(name: str) -> tuple[BinaryIO, wave.Wave_write]:
    # The file is opened here rather than by wave.open(path): on 3.11 a failed open inside
    # wave leaves a half-built Wave_write whose __del__ raises. wave does not close a file
    # object it was given, so the device closes both (writer first: it patches the header).
    try:
        raw = open(name, "wb")  # noqa: SIM115 (kept open for the device lifetime)
    except OSError as exc:
        raise AudioDeviceError(
            AudioErrorCode.AUDIO_FILE_UNWRITABLE,
            f"cannot create the recording {name}: {exc.strerror or exc}",
        ) from exc
    writer = wave.open(raw, "wb")  # noqa: SIM115 (closed in FileAudioDevice._release)
    writer.setnchannels(1)
    writer.setsampwidth(_SAMPLE_WIDTH)
    writer.setframerate(SAMPLE_RATE)
    return raw, writer


class FileAudioDevice(ClockedAudioDevice):
    """Plays ``play`` into ``capture`` and records ``playback`` into ``record``, 20 ms a tick.

    * ``play``: WAV file, 16-bit PCM, 8000 Hz, mono or stereo (stereo is averaged to mono).
      Loaded whole at construction and padded with silence to whole frames; ``None`` plays
      silence. A missing file raises :class:`AudioDeviceError` ``AUDIO_FILE_NOT_FOUND``,
      any other problem ``AUDIO_FILE_INVALID`` with what is wrong and how to convert it.
    * ``record``: WAV file written 8000 Hz mono 16-bit, one frame per tick, incrementally
      (nothing accumulates in memory); created at construction (``AUDIO_FILE_UNWRITABLE``
      if it cannot be) and finalised by ``stop()``, which must be called even if the device
      was never started.
    * ``realtime=False``: ticks run back to back (see ``ClockedAudioDevice``); for lockstep
      use ``advance(n)`` without starting the device.

    ``play_finished`` is set once the last frame of the play file has been pushed to
    ``capture`` (at once if there is nothing to play). ``ticks`` counts ticks run so far,
    which is also the number of frames in the recording.
    """

    thread_name = "audio-file-clock"

    def __init__(
        self,
        play: str | os.PathLike[str] | None = None,
        record: str | os.PathLike[str] | None = None,
        *,
        realtime: bool = True,
        prefill_frames: int = 2,
        playback_capacity_frames: int = 25,
        fixed_delay: bool = False,
    ) -> None:
        super().__init__(
            realtime=realtime,
            prefill_frames=prefill_frames,
            playback_capacity_frames=playback_capacity_frames,
            fixed_delay=fixed_delay,
        )
        self.play_path = None if play is None else os.fspath(play)
        self.record_path = None if record is None else os.fspath(record)
        self.play_finished = threading.Event()
        if self.play_path is None:
            self._play = np.zeros((0, FRAME_SAMPLES), dtype=np.int16)
            play_samples = 0
        else:
            self._play, play_samples = _load_play_file(self.play_path)
        self.play_duration: float = play_samples / SAMPLE_RATE
        self._play_frames = self._play.shape[0]
        self._play_pos = 0
        if self._play_frames == 0:
            self.play_finished.set()
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        silence.flags.writeable = False
        self._silence: NDArray[np.int16] = silence
        self._record_file: BinaryIO | None = None
        self._writer: wave.Wave_write | None = None
        if self.record_path is not None:
            self._record_file, self._writer = _open_record_file(self.record_path)

    def _tick(self) -> None:
        pos = self._play_pos
        if pos < self._play_frames:
            frame = self._play[pos]
            self._play_pos = pos + 1
            if pos + 1 == self._play_frames:
                self.play_finished.set()
        else:
            frame = self._silence
        out = self._exchange_frame(frame)
        if self._writer is not None:
            self._writer.writeframesraw(out.tobytes())

    def _release(self) -> None:
        writer, self._writer = self._writer, None
        raw, self._record_file = self._record_file, None
        if writer is None or raw is None:
            return
        try:
            try:
                writer.close()  # patches the RIFF/data sizes in the header
            finally:
                raw.close()
        except (OSError, wave.Error) as exc:
            self._fail(
                f"could not finalise the recording {self.record_path}: {exc}",
                AudioErrorCode.AUDIO_FILE_UNWRITABLE,
            )

    def __repr__(self) -> str:
        return (
            f"FileAudioDevice(play={self.play_path!r}, record={self.record_path!r}, "
            f"realtime={self.realtime}, ticks={self.ticks})"
        )
