"""G.711 μ-law codec on numpy arrays, bit-exact with CPython's ``audioop``.

``encode_mulaw`` matches ``audioop.lin2ulaw(x, 2)`` and ``decode_mulaw`` matches
``audioop.ulaw2lin(x, 2)`` for every input (tests check all 65536 samples and all 256 codes).
``audioop`` itself is not used: it is deprecated and removed in Python 3.13, so the lookup
tables are built here at import time from the same algorithm (the Sun/CCITT reference code
that ``audioop.c`` carries):

* encode: the 16-bit sample is shifted to 14 bits (``x >> 2``), split into sign and
  magnitude (a negative ``v`` becomes ``-v``, so ``-1`` encodes like ``+1`` with the sign
  set), the magnitude is clipped at 8159, biased by 33 (0x84 in 16-bit units), its segment
  (0..7) and the 4 bits below the leading one form the code, and all bits are inverted;
* decode: code -> ``±((((~c & 0x0F) << 3) + 0x84) << seg) - 0x84``, range ±32124;
  0x7F and 0xFF both decode to 0.

Speed, measured on Python 3.11 / numpy 2.4 / x86-64 with a fresh ``bytes`` buffer per call
(re-using one buffer lets the CPU's branch predictor learn audioop's data-dependent
branches and makes audioop encode look ~3x faster than it is on live audio):

* encode: one 65536-entry ``uint8`` table indexed by the samples viewed as ``uint16``
  (``ndarray.take``, faster than fancy indexing). 1 s (8000 samples): ~8 µs vs ~56-82 µs
  for audioop (7-10x, speech-like vs full-scale noise); 20 ms: ~1.3 µs vs ~1.5-1.7 µs.
* decode: a naive 256-entry ``int16`` table fancy-index costs ~12.7 µs per second of
  audio vs ~3.1 µs for audioop (0.25x); ``np.take`` on it ~7.8 µs; ``bytes.translate`` into
  two byte planes ~15 µs. Used instead: a 65536-entry ``uint32`` table of *pairs* of
  decoded samples, indexed by the codes viewed as ``uint16`` (two codes per lookup, no
  bounds check with ``mode="wrap"``), the result viewed back as ``int16``: ~4.7 µs per
  second of audio (~0.65x audioop). At 20 ms numpy's fixed per-call cost dominates:
  ~1.5 µs vs ~0.11 µs, i.e. 0.01 % of the frame period.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["decode_alaw", "decode_mulaw", "encode_alaw", "encode_mulaw"]

_BIAS: Final = 0x84  # bias in 16-bit units; 33 in the 14-bit domain the encoder works in
_CLIP: Final = 8159  # magnitude clip in the 14-bit domain
_SEG_UEND: Final = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _build_encode_table() -> NDArray[np.uint8]:
    """Code for every 16-bit sample, indexed by the sample's bit pattern as ``uint16``."""
    samples = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    pcm14 = samples >> 2
    negative = pcm14 < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -pcm14, pcm14), _CLIP) + (_BIAS >> 2)
    # Segment = number of segment end points below the magnitude (the C code's search()).
    seg = np.searchsorted(np.array(_SEG_UEND, dtype=np.int32), magnitude, side="left")
    # After the clip the biased magnitude is at most 8192 = 0x2000 > 0x1FFF, i.e. seg 8:
    # the C code returns the maximum code (0x7F ^ mask) for it.
    code = np.where(
        seg >= 8,
        0x7F,
        (np.minimum(seg, 7) << 4) | ((magnitude >> (np.minimum(seg, 7) + 1)) & 0x0F),
    )
    return ((code ^ mask) & 0xFF).astype(np.uint8)


def _build_decode_table() -> NDArray[np.int16]:
    """Sample for each of the 256 codes."""
    inverted = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((inverted & 0x0F) << 3) + _BIAS) << ((inverted & 0x70) >> 4)
    return np.where(inverted & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _build_pair_table(single: NDArray[np.int16]) -> NDArray[np.uint32]:
    """Two decoded samples per entry, laid out so ``table[pair_index].view(int16)`` is in order.

    The index is two consecutive code bytes read as one native ``uint16``; splitting every
    index back into its two bytes with the same native view keeps this right on either
    byte order.
    """
    byte_pairs = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    return np.ascontiguousarray(single[byte_pairs]).view(np.uint32).reshape(-1)


_ENCODE: Final = _build_encode_table()
_DECODE: Final = _build_decode_table()
_DECODE_PAIRS: Final = _build_pair_table(_DECODE)
for _table in (_ENCODE, _DECODE, _DECODE_PAIRS):
    _table.flags.writeable = False
del _table

Buffer = bytes | bytearray | memoryview


def _raw_bytes(data: Buffer) -> memoryview:
    try:
        return memoryview(data).cast("B")
    except TypeError as exc:  # non-contiguous memoryview
        raise ValueError(f"audio buffer must be contiguous: {exc}") from exc


def _encode(
    pcm: Buffer | NDArray[np.int16], table: NDArray[np.uint8], name: str
) -> NDArray[np.uint8]:
    if type(pcm) is bytes and not len(pcm) % 2:  # the common case, ~0.6 µs less per call
        return table.take(np.frombuffer(pcm, dtype="<u2"))
    if isinstance(pcm, np.ndarray):
        if pcm.dtype.kind != "i" or pcm.dtype.itemsize != 2:
            raise TypeError(f"{name} needs int16 samples, got an array of dtype {pcm.dtype}")
        samples = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1).view(np.uint16)
    else:
        raw = _raw_bytes(pcm)
        if raw.nbytes % 2:
            raise ValueError(
                f"16-bit PCM needs an even number of bytes, got {raw.nbytes} "
                "(a truncated sample at the end?)"
            )
        samples = np.frombuffer(raw, dtype="<u2")
    # ndarray.take beats fancy indexing (table[samples]) here: ~7 vs ~11 µs per 8000.
    return table.take(samples)


def _decode(
    data: Buffer | NDArray[np.uint8],
    single: NDArray[np.int16],
    pairs: NDArray[np.uint32],
    name: str,
) -> NDArray[np.int16]:
    if type(data) is bytes and not len(data) % 2:  # the common case, ~0.9 µs less per call
        return pairs.take(np.frombuffer(data, dtype=np.uint16), mode="wrap").view(np.int16)
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"{name} needs uint8 codes, got an array of dtype {data.dtype}")
        codes = np.ascontiguousarray(data).reshape(-1)
    else:
        codes = np.frombuffer(_raw_bytes(data), dtype=np.uint8)
    n = codes.size
    if n % 2 == 0:
        # mode="wrap" skips the bounds check (every uint16 is a valid index): ~15% faster.
        return pairs.take(codes.view(np.uint16), mode="wrap").view(np.int16)
    out = np.empty(n, dtype=np.int16)
    even = n - 1
    if even:
        pairs.take(codes[:even].view(np.uint16), mode="wrap", out=out[:even].view(np.uint32))
    out[even] = single[codes[even]]
    return out


def encode_mulaw(pcm: Buffer | NDArray[np.int16]) -> NDArray[np.uint8]:
    """Encode 16-bit linear PCM to μ-law codes, one byte per sample.

    ``pcm`` is either a buffer of little-endian signed 16-bit samples (its length in bytes
    must be even) or an ``int16`` array of any shape (flattened in C order).
    """
    return _encode(pcm, _ENCODE, "encode_mulaw")


def decode_mulaw(data: Buffer | NDArray[np.uint8]) -> NDArray[np.int16]:
    """Decode μ-law codes (one byte per sample) to 16-bit linear PCM (native ``int16``).

    ``data`` is a buffer of codes or a ``uint8`` array of any shape (flattened in C order).
    """
    return _decode(data, _DECODE, _DECODE_PAIRS, "decode_mulaw")


# -- A-law (G.711 Annex A), bit-exact with CPython's audioop.lin2alaw / alaw2lin -------------

_SEG_AEND: Final = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _alaw_codes(samples: NDArray[np.int16]) -> NDArray[np.uint8]:
    """audioop's st_linear2alaw, vectorised, on 16-bit samples (it works on sample >> 3)."""
    pcm13 = samples.astype(np.int32) >> 3
    positive = pcm13 >= 0
    mask = np.where(positive, 0xD5, 0x55)
    magnitude = np.where(positive, pcm13, -pcm13 - 1)
    seg = np.searchsorted(np.array(_SEG_AEND), magnitude, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((magnitude >> shift) & 0x0F)
    return np.where(seg >= 8, 0x7F ^ mask, aval ^ mask).astype(np.uint8)


def _alaw_linear(code: int) -> int:
    """audioop's st_alaw2linear16."""
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def _build_alaw_tables() -> tuple[NDArray[np.uint8], NDArray[np.int16]]:
    samples = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
    encode = _alaw_codes(samples)
    decode = np.array([_alaw_linear(c) for c in range(256)], dtype=np.int16)
    return encode, decode


_A_ENCODE, _A_DECODE = _build_alaw_tables()
_A_DECODE_PAIRS: Final = _build_pair_table(_A_DECODE)
for _table in (_A_ENCODE, _A_DECODE, _A_DECODE_PAIRS):
    _table.flags.writeable = False
del _table


def encode_alaw(pcm: Buffer | NDArray[np.int16]) -> NDArray[np.uint8]:
    """Encode 16-bit linear PCM to A-law codes (same input rules as :func:`encode_mulaw`)."""
    return _encode(pcm, _A_ENCODE, "encode_alaw")


def decode_alaw(data: Buffer | NDArray[np.uint8]) -> NDArray[np.int16]:
    """Decode A-law codes to 16-bit linear PCM (same input rules as :func:`decode_mulaw`)."""
    return _decode(data, _A_DECODE, _A_DECODE_PAIRS, "decode_alaw")
