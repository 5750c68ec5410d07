"""Binary audio frames of protocol v1 media legs (sans-I/O).

One WebSocket binary frame carries 20 ms of G.711 audio at 8 kHz behind an 8-byte header,
all integers big-endian::

    offset  size  field
    0       1     kind        0x01 = audio (other values are reserved)
    1       1     flags       bit 0 = marker (first frame sent on a newly opened leg); others 0
    2       2     sequence    +1 per frame in this direction of the call, wraps 65535 -> 0
    4       4     timestamp   sample clock at 8 kHz of the first sample, +160 per frame, wraps
    8       160   payload     160 G.711 bytes (codec negotiated in media_ready)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from softphone.protocol.errors import ErrorCode, ProtocolError

FRAME_KIND_AUDIO: Final = 0x01
FLAG_MARKER: Final = 0x01
SAMPLE_RATE: Final = 8000
FRAME_MS: Final = 20
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000
PAYLOAD_BYTES: Final = FRAME_SAMPLES
HEADER: Final = struct.Struct("!BBHI")
HEADER_BYTES: Final = HEADER.size
FRAME_BYTES: Final = HEADER_BYTES + PAYLOAD_BYTES


@dataclass(frozen=True, slots=True)
class AudioFrame:
    sequence: int
    timestamp: int
    payload: bytes
    marker: bool = False


def encode_audio_frame(
    sequence: int, timestamp: int, payload: bytes, *, marker: bool = False
) -> bytes:
    """Build one binary frame. ``sequence`` and ``timestamp`` are taken modulo their width."""
    if len(payload) != PAYLOAD_BYTES:
        raise ProtocolError(
            ErrorCode.MALFORMED_FRAME,
            f"audio payload must be {PAYLOAD_BYTES} bytes, got {len(payload)}",
        )
    flags = FLAG_MARKER if marker else 0
    return HEADER.pack(FRAME_KIND_AUDIO, flags, sequence & 0xFFFF, timestamp & 0xFFFFFFFF) + payload


def audio_payload(data: bytes) -> bytes | None:
    """The 160 bytes of G.711 of a valid v1 audio frame, or None if ``data`` is not one
    (then :func:`decode_audio_frame` says why). The relay's fast path: no object built."""
    if len(data) == FRAME_BYTES and data[0] == FRAME_KIND_AUDIO and not data[1] & ~FLAG_MARKER:
        return data[HEADER_BYTES:]
    return None


def decode_audio_frame(data: bytes) -> AudioFrame:
    """Parse one binary frame; raise MALFORMED_FRAME for anything but a valid v1 audio frame."""
    if len(data) != FRAME_BYTES:
        raise ProtocolError(
            ErrorCode.MALFORMED_FRAME,
            f"binary frame must be {FRAME_BYTES} bytes (8 header + 160 audio), got {len(data)}",
        )
    kind, flags, sequence, timestamp = HEADER.unpack_from(data)
    if kind != FRAME_KIND_AUDIO:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"unknown frame kind 0x{kind:02x}")
    if flags & ~FLAG_MARKER:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"reserved flag bits set: 0x{flags:02x}")
    return AudioFrame(sequence, timestamp, bytes(data[HEADER_BYTES:]), bool(flags & FLAG_MARKER))
