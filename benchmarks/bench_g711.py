"""G.711 μ-law throughput of softphone.media against CPython's audioop (the named baseline).

Run: .venv/bin/python benchmarks/bench_g711.py
A fresh buffer is used for every call (cycling through many pre-generated buffers), because
re-using one buffer lets the branch predictor make audioop's encoder look ~3x faster.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from softphone.media import decode_mulaw, encode_mulaw

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13 without audioop-lts
        audioop = None  # type: ignore[assignment]


def _speechlike(n: int, rng: np.random.Generator) -> bytes:
    x = rng.standard_normal(n) * 3000 * (1 + np.sin(np.arange(n) / 400))
    return x.clip(-32768, 32767).astype("<i2").tobytes()


def _rate(fn, buffers: list[bytes], samples: int, seconds: float = 0.5) -> float:  # type: ignore[no-untyped-def]
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for buf in buffers:
            fn(buf)
        count += len(buffers)
    return count * samples / (time.perf_counter() - start) / 1e6


def main() -> None:
    rng = np.random.default_rng(1)
    print(f"{'case':28} {'audin Msa/s':>12} {'audioop Msa/s':>14} {'ratio':>7}")
    for label, samples in (("20 ms frame (160)", 160), ("1 s buffer (8000)", 8000)):
        pcm = [_speechlike(samples, rng) for _ in range(max(64, 400_000 // samples))]
        codes = [encode_mulaw(b).tobytes() for b in pcm]
        ours_enc = _rate(encode_mulaw, pcm, samples)
        ours_dec = _rate(decode_mulaw, codes, samples)
        if audioop is not None:
            ref_enc = _rate(lambda b: audioop.lin2ulaw(b, 2), pcm, samples)
            ref_dec = _rate(lambda b: audioop.ulaw2lin(b, 2), codes, samples)
            print(f"encode {label:21} {ours_enc:12.1f} {ref_enc:14.1f} {ours_enc / ref_enc:6.2f}x")
            print(f"decode {label:21} {ours_dec:12.1f} {ref_dec:14.1f} {ours_dec / ref_dec:6.2f}x")
        else:
            print(f"encode {label:21} {ours_enc:12.1f} {'n/a':>14}")
            print(f"decode {label:21} {ours_dec:12.1f} {'n/a':>14}")


if __name__ == "__main__":
    main()
