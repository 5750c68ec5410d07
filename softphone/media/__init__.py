"""Audio for the softphone: G.711, frame queues, audio devices; no asyncio and no sockets in here.

Everything is 8000 Hz mono ``int16`` in 20 ms frames of 160 samples. Devices run their own
clock thread; the engine (an asyncio loop elsewhere) exchanges frames with them through
the non-blocking :class:`FrameQueue` / :class:`JitterBuffer` on ``AudioDevice.capture`` /
``AudioDevice.playback``. This package does not import ``softphone.protocol``.
"""

from softphone.media.buffers import FrameQueue, PlayoutBuffer
from softphone.media.device import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioDevice,
    AudioDeviceError,
    AudioErrorCode,
    DeviceStats,
    NullAudioDevice,
)
from softphone.media.devices import AudioSystem, DeviceInfo, DevicesChange, quiet_stderr
from softphone.media.filedevice import FileAudioDevice
from softphone.media.g711 import decode_alaw, decode_mulaw, encode_alaw, encode_mulaw
from softphone.media.jitter import JitterBuffer, JitterStats
from softphone.media.levels import (
    FlatInputDetector,
    LevelMeter,
    LevelSlot,
    SpeakingWhileMuted,
    frame_level,
)
from softphone.media.processing import AudioProcessingUnavailable, AudioProcessor, ProcessorStats
from softphone.media.pyaudio_device import PyAudioDevice, RealtimeStats
from softphone.media.resample import resample_linear
from softphone.media.resampler import Resampler
from softphone.media.tones import (
    Sound,
    SoundMixer,
    busy_tone,
    dtmf_sequence,
    dtmf_sound,
    dtmf_tone,
    ringback,
    ringtone,
    test_tone,
)

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioDevice",
    "AudioDeviceError",
    "AudioErrorCode",
    "AudioProcessingUnavailable",
    "AudioProcessor",
    "AudioSystem",
    "DeviceInfo",
    "DeviceStats",
    "DevicesChange",
    "FileAudioDevice",
    "FlatInputDetector",
    "FrameQueue",
    "JitterBuffer",
    "JitterStats",
    "LevelMeter",
    "LevelSlot",
    "NullAudioDevice",
    "PlayoutBuffer",
    "ProcessorStats",
    "PyAudioDevice",
    "RealtimeStats",
    "Resampler",
    "Sound",
    "SoundMixer",
    "SpeakingWhileMuted",
    "busy_tone",
    "decode_alaw",
    "decode_mulaw",
    "dtmf_sequence",
    "dtmf_sound",
    "dtmf_tone",
    "encode_alaw",
    "encode_mulaw",
    "frame_level",
    "quiet_stderr",
    "resample_linear",
    "ringback",
    "ringtone",
    "test_tone",
]
