"""G.711 μ-law codec (bit-exact with audioop) and the linear resampler."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from softphone.media import decode_mulaw, encode_mulaw, resample_linear

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


@pytest.fixture(scope="module")
def audioop() -> types.ModuleType:
    """CPython's audioop (Python < 3.13) or the audioop-lts backport of the same module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: types.ModuleType = pytest.importorskip(
            "audioop", reason="reference needs audioop (Python < 3.13) or audioop-lts installed"
        )
    return module


def _segment(codes: np.ndarray) -> np.ndarray:
    return ((~codes.astype(np.int32)) >> 4) & 0x7


# -- bit-exactness against audioop ----------------------------------------------------------


def test_encode_matches_audioop_for_every_sample(audioop: types.ModuleType) -> None:
    reference = np.frombuffer(audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2), dtype=np.uint8)
    from_array = encode_mulaw(ALL_SAMPLES)
    from_bytes = encode_mulaw(ALL_SAMPLES.astype("<i2").tobytes())
    assert from_array.dtype == np.uint8
    mismatches = np.flatnonzero(from_array != reference)
    assert mismatches.size == 0, f"first mismatching samples: {ALL_SAMPLES[mismatches[:5]]}"
    np.testing.assert_array_equal(from_bytes, reference)


def test_decode_matches_audioop_for_every_code(audioop: types.ModuleType) -> None:
    reference = np.frombuffer(audioop.ulaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    decoded = decode_mulaw(ALL_CODES)
    assert decoded.dtype == np.int16
    np.testing.assert_array_equal(decoded, reference)
    np.testing.assert_array_equal(decode_mulaw(ALL_CODES.tobytes()), reference)


def test_decode_matches_audioop_for_every_pair_of_codes(audioop: types.ModuleType) -> None:
    # The decoder looks codes up two at a time: check all 65536 ordered pairs.
    pairs = np.stack(np.meshgrid(ALL_CODES, ALL_CODES, indexing="ij"), axis=-1).reshape(-1)
    reference = np.frombuffer(audioop.ulaw2lin(pairs.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(decode_mulaw(pairs.tobytes()), reference)


@pytest.mark.parametrize("length", [1, 3, 159, 161, 8001])
def test_decode_odd_lengths_match_audioop(audioop: types.ModuleType, length: int) -> None:
    codes = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()
    reference = np.frombuffer(audioop.ulaw2lin(codes, 2), dtype=np.int16)
    decoded = decode_mulaw(codes)
    assert decoded.shape == (length,)
    np.testing.assert_array_equal(decoded, reference)


# -- known values and properties that do not need audioop ----------------------------------


def test_known_codes() -> None:
    decoded = decode_mulaw(bytes([0x00, 0x80, 0x7F, 0xFF, 0xFE, 0x7E]))
    assert decoded.tolist() == [-32124, 32124, 0, 0, 8, -8]
    samples = np.array([0, 1, 3, 4, -1, -4, 32767, -32768, 32124, -32124], dtype=np.int16)
    assert encode_mulaw(samples).tolist() == [
        0xFF,
        0xFF,
        0xFF,
        0xFE,
        0x7E,
        0x7E,
        0x80,
        0x00,
        0x80,
        0x00,
    ]


def test_decoded_encoding_is_monotonic_and_within_half_a_step() -> None:
    codes = encode_mulaw(ALL_SAMPLES)
    decoded = decode_mulaw(codes).astype(np.int32)
    x = ALL_SAMPLES.astype(np.int32)
    assert np.all(np.diff(decoded) >= 0)
    # Reconstruction is the middle of the quantisation interval (step 8 << segment); the
    # 14-bit truncation and the sign handling add at most 4 more. Beyond ±32635 the
    # encoder clips to the largest code.
    in_range = np.abs(x) <= 32635
    bound = (4 << _segment(codes)) + 4
    assert np.all(np.abs(decoded - x)[in_range] <= bound[in_range])
    assert np.all(np.abs(decoded[~in_range]) == 32124)


@given(hnp.arrays(np.int16, st.integers(0, 400)))
def test_round_trip_within_quantisation_step(samples: np.ndarray) -> None:
    codes = encode_mulaw(samples)
    assert codes.shape == samples.shape
    decoded = decode_mulaw(codes).astype(np.int32)
    x = samples.astype(np.int32)
    clipped = np.abs(x) > 32635
    bound = (4 << _segment(codes)) + 4
    assert np.all((np.abs(decoded - x) <= bound) | (clipped & (np.abs(decoded) == 32124)))
    assert np.all((np.sign(decoded) == np.sign(x)) | (decoded == 0))
    # bytes in, same codes out; and decoding is idempotent on its own output.
    np.testing.assert_array_equal(encode_mulaw(samples.astype("<i2").tobytes()), codes)
    np.testing.assert_array_equal(encode_mulaw(decode_mulaw(codes)), codes)


def test_sqnr_of_a_1khz_sine_at_minus_10_dbfs() -> None:
    t = np.arange(8000) / 8000
    amplitude = 32767 * 10 ** (-10 / 20)
    x = np.round(amplitude * np.sin(2 * np.pi * 1000 * t + 0.1)).astype(np.int16)
    y = decode_mulaw(encode_mulaw(x)).astype(np.float64)
    noise = y - x
    sqnr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(noise**2))
    assert 35 < sqnr < 42, sqnr  # G.711 μ-law: ~38 dB; far more would mean no quantisation


# -- input forms and errors ---------------------------------------------------------------


def test_buffer_and_array_inputs_agree() -> None:
    rng = np.random.default_rng(7)
    samples = rng.integers(-32768, 32768, 320, dtype=np.int16)
    raw = samples.astype("<i2").tobytes()
    expected = encode_mulaw(samples)
    for form in (raw, bytearray(raw), memoryview(raw), samples.data):
        np.testing.assert_array_equal(encode_mulaw(form), expected)
    np.testing.assert_array_equal(encode_mulaw(samples.reshape(2, 160)), expected)
    np.testing.assert_array_equal(encode_mulaw(samples.astype(">i2")), expected)
    np.testing.assert_array_equal(encode_mulaw(samples[::2]), expected[::2])

    codes = expected.tobytes()
    decoded = decode_mulaw(codes)
    for cform in (bytearray(codes), memoryview(codes), expected, expected.reshape(16, 20)):
        np.testing.assert_array_equal(decode_mulaw(cform), decoded)
    np.testing.assert_array_equal(decode_mulaw(expected[::3]), decoded[::3])
    # Unaligned buffer views (odd offsets) for both even and odd lengths.
    np.testing.assert_array_equal(decode_mulaw(memoryview(codes)[1:]), decoded[1:])
    np.testing.assert_array_equal(decode_mulaw(memoryview(codes)[1:-2]), decoded[1:-2])
    np.testing.assert_array_equal(encode_mulaw(memoryview(raw)[2:]), expected[1:])


def test_outputs_are_fresh_writable_arrays() -> None:
    codes = encode_mulaw(np.zeros(4, dtype=np.int16))
    pcm = decode_mulaw(codes)
    codes[0] = 1
    pcm[0] = 1
    assert encode_mulaw(np.zeros(4, dtype=np.int16))[0] == 0xFF
    assert decode_mulaw(bytes([0xFF]))[0] == 0


def test_empty_inputs() -> None:
    assert encode_mulaw(b"").shape == (0,)
    assert decode_mulaw(b"").shape == (0,)
    assert encode_mulaw(np.zeros(0, dtype=np.int16)).dtype == np.uint8
    assert decode_mulaw(np.zeros(0, dtype=np.uint8)).dtype == np.int16


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint16, np.int8, np.uint8])
def test_encode_rejects_non_int16_arrays(dtype: type) -> None:
    with pytest.raises(TypeError, match="int16"):
        encode_mulaw(np.zeros(160, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float64])
def test_decode_rejects_non_uint8_arrays(dtype: type) -> None:
    with pytest.raises(TypeError, match="uint8"):
        decode_mulaw(np.zeros(160, dtype=dtype))


def test_encode_rejects_odd_byte_counts() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        encode_mulaw(b"\x00\x01\x02")


# -- resample_linear ----------------------------------------------------------------------


def test_resample_frame_sizes() -> None:
    assert resample_linear(np.zeros(960, dtype=np.int16), 48000, 8000).shape == (160,)
    assert resample_linear(np.zeros(882, dtype=np.int16), 44100, 8000).shape == (160,)
    assert resample_linear(np.zeros(160, dtype=np.int16), 8000, 48000).shape == (960,)
    assert resample_linear(np.zeros(0, dtype=np.int16), 8000, 16000).shape == (0,)


def test_resample_interpolates_linearly() -> None:
    ramp = np.array([0, 100, 200, -300], dtype=np.int16)
    up = resample_linear(ramp, 8000, 16000)
    assert up.dtype == np.int16
    assert up.tolist() == [0, 50, 100, 150, 200, -50, -300, -300]
    down = resample_linear(np.arange(0, 1200, 100, dtype=np.int16), 12000, 8000)
    assert down.tolist() == [0, 150, 300, 450, 600, 750, 900, 1050]
    same = resample_linear(ramp, 8000, 8000)
    assert same.tolist() == ramp.tolist()
    assert same is not ramp


def test_resample_keeps_a_tone_in_band() -> None:
    t = np.arange(4800) / 48000
    tone = np.round(10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    out = resample_linear(tone, 48000, 8000).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 8000 / out.size == pytest.approx(1000, abs=10)


def test_resample_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="int16"):
        resample_linear(np.zeros(10, dtype=np.float32), 48000, 8000)
    with pytest.raises(ValueError, match="positive"):
        resample_linear(np.zeros(10, dtype=np.int16), 0, 8000)


# -- A-law ---------------------------------------------------------------------------------


def test_alaw_encode_matches_audioop_for_every_sample(audioop: types.ModuleType) -> None:
    from softphone.media.g711 import encode_alaw

    reference = np.frombuffer(audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(encode_alaw(ALL_SAMPLES), reference)
    np.testing.assert_array_equal(encode_alaw(ALL_SAMPLES.tobytes()), reference)


@pytest.mark.parametrize("length", [0, 1, 2, 7, 256])
def test_alaw_decode_matches_audioop(audioop: types.ModuleType, length: int) -> None:
    from softphone.media.g711 import decode_alaw

    codes = (np.arange(length * 37, dtype=np.int64) % 256).astype(np.uint8)[:length]
    reference = np.frombuffer(audioop.alaw2lin(codes.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(decode_alaw(codes), reference)
    np.testing.assert_array_equal(decode_alaw(codes.tobytes()), reference)


def test_alaw_decode_every_code_and_sqnr() -> None:
    from softphone.media.g711 import decode_alaw, encode_alaw

    t = np.arange(8000) / 8000
    sine = np.rint(np.sin(2 * np.pi * 1000 * t) * 32767 * 10 ** (-10 / 20)).astype(np.int16)
    back = decode_alaw(encode_alaw(sine)).astype(np.float64)
    noise = back - sine
    sqnr = 10 * np.log10(np.mean(sine.astype(np.float64) ** 2) / np.mean(noise**2))
    assert sqnr > 35
    assert len(set(decode_alaw(ALL_CODES).tolist())) == 256  # A-law has no duplicate zero
