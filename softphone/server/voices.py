"""The recorded voice clips of the sandbox network (``assets/sandbox/*-8k.wav``).

The clips are 8000 Hz mono 16-bit PCM WAVs made with espeak-ng and sox by
``assets/sandbox/make-voices.sh``. A core started from a checkout finds them in the source
tree; an installed package carries them as data files in ``<prefix>/share/audin-phone/
sandbox``; ``CoreConfig.assets_dir`` may point elsewhere. Without them the IVR and speech
lines end their calls ``failed`` with the reason.
"""

from __future__ import annotations

import sys
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from softphone.protocol.frames import FRAME_SAMPLES

SAMPLE_RATE: Final = 8000
SOURCE_ASSETS_DIR: Final = Path(__file__).resolve().parents[2] / "assets" / "sandbox"
INSTALLED_ASSETS_DIR: Final = Path(sys.prefix) / "share" / "audin-phone" / "sandbox"
DEFAULT_ASSETS_DIR: Final = (
    SOURCE_ASSETS_DIR
    if SOURCE_ASSETS_DIR.is_dir() or not INSTALLED_ASSETS_DIR.is_dir()
    else INSTALLED_ASSETS_DIR
)
"""A checkout's ``assets/sandbox``, else the installed copy (the wheel's data files)."""

# Keypad keys the IVR reads back, and the clip of each (``#`` ends an entry; ``w`` is a pause).
DIGIT_CLIPS: Final = {
    **{d: f"digit-{d}" for d in "0123456789"},
    "*": "digit-star",
    "A": "digit-a",
    "B": "digit-b",
    "C": "digit-c",
    "D": "digit-d",
}

Samples = NDArray[np.int16]


class VoiceAssetError(Exception):
    """A voice clip is missing or not 8000 Hz mono 16-bit PCM."""


def load_clip(path: Path) -> Samples:
    """One clip as ``int16`` samples, padded with silence to whole 20 ms frames."""
    try:
        with wave.open(str(path), "rb") as wav:
            shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
            if shape != (SAMPLE_RATE, 1, 2):
                rate, channels, width = shape
                raise VoiceAssetError(
                    f"{path} is {rate} Hz, {channels} channel(s), {8 * width}-bit;"
                    " the sandbox needs 8000 Hz mono 16-bit PCM"
                )
            raw = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise VoiceAssetError(f"voice clip {path} is missing") from None
    except (OSError, EOFError, wave.Error) as exc:
        raise VoiceAssetError(f"voice clip {path} cannot be read: {exc}") from None
    samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if samples.size == 0:
        raise VoiceAssetError(f"voice clip {path} is empty")
    return pad_to_frames(samples)


def pad_to_frames(samples: Samples) -> Samples:
    """``samples`` followed by silence up to a multiple of 160 samples (read-only copy)."""
    extra = (-samples.size) % FRAME_SAMPLES
    padded = np.concatenate([samples, np.zeros(extra, dtype=np.int16)])
    padded.flags.writeable = False
    return padded


def silence(seconds: float) -> Samples:
    """Whole frames of silence lasting at least ``seconds``."""
    frames = max(1, -(-round(seconds * SAMPLE_RATE) // FRAME_SAMPLES))
    quiet = np.zeros(frames * FRAME_SAMPLES, dtype=np.int16)
    quiet.flags.writeable = False
    return quiet


@dataclass(frozen=True, slots=True, eq=False)
class Voices:
    """Every clip the simulated network speaks."""

    ivr_menu: Samples
    ivr_you_entered: Samples
    digits: dict[str, Samples]
    speech: Samples

    @classmethod
    def load(cls, folder: Path = DEFAULT_ASSETS_DIR) -> Voices:
        def clip(name: str) -> Samples:
            return load_clip(folder / f"{name}-8k.wav")

        return cls(
            ivr_menu=clip("ivr-menu"),
            ivr_you_entered=clip("ivr-you-entered"),
            digits={key: clip(name) for key, name in DIGIT_CLIPS.items()},
            speech=clip("speech"),
        )

    def readback(self, entry: str, gap: float = 0.12) -> Samples:
        """ "You entered" and each key of ``entry`` (keys without a clip are skipped)."""
        pause = silence(gap)
        parts = [self.ivr_you_entered, pause]
        for key in entry:
            spoken = self.digits.get(key)
            if spoken is not None:
                parts += [spoken, pause]
        return pad_to_frames(np.concatenate(parts))
