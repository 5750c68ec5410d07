"""Plain linear-interpolation resampling of 16-bit PCM.

This is what the browser SDK we replace did to bring the sound card rate to 8 kHz: no
anti-alias filter, so downsampling folds everything above the new Nyquist frequency back
into the band. It is not the default path (open devices at 8000 Hz instead); it exists for
devices that cannot, and for parity tests with the old SDK.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["resample_linear"]


def resample_linear(pcm: NDArray[np.int16], from_rate: int, to_rate: int) -> NDArray[np.int16]:
    """Resample mono ``int16`` samples from ``from_rate`` to ``to_rate`` Hz by linear interpolation.

    Output sample ``i`` is taken at input position ``i * from_rate / to_rate`` (interpolated
    between the two neighbouring input samples, the last sample held past the end), rounded
    to the nearest integer. The output has ``round(len(pcm) * to_rate / from_rate)`` samples,
    so a 20 ms block at 48000 Hz (960 samples) becomes exactly 160 samples at 8000 Hz.
    No anti-alias filter: see the module docstring. Any shape is flattened in C order.
    """
    if not isinstance(pcm, np.ndarray) or pcm.dtype.kind != "i" or pcm.dtype.itemsize != 2:
        got = pcm.dtype if isinstance(pcm, np.ndarray) else type(pcm).__name__
        raise TypeError(f"resample_linear needs an int16 array, got {got}")
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    samples = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
    if from_rate == to_rate:
        return samples.copy()
    n_in = samples.size
    n_out = (n_in * to_rate + from_rate // 2) // from_rate
    if n_in == 0 or n_out == 0:
        return np.zeros(0, dtype=np.int16)
    positions = np.arange(n_out, dtype=np.float64) * (from_rate / to_rate)
    out = np.interp(positions, np.arange(n_in, dtype=np.float64), samples.astype(np.float64))
    # Interpolating between int16 values never leaves the int16 range; rint then cast.
    return np.rint(out).astype(np.int16)
