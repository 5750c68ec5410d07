"""Cost and effect of echo cancellation / noise suppression / AGC per 20 ms frame, plus the
device-thread helpers (frame_level, SoundMixer.mix).

Run: .venv/bin/python benchmarks/bench_processing.py [--seconds 30]

Cost: wall-clock and CPU time (``time.thread_time_ns``: this thread's CPU only, so it is
not inflated when other processes preempt us) of ``AudioProcessor.process_capture`` (plus
``process_render`` when AEC is on) per 20 ms frame at 8 kHz, median and p99 over the
run, first 50 frames excluded. "resampling only" is the 8k->16k->8k pair every
enabled configuration pays (all switches off is a pass-through and costs nothing).

Effect (synthetic speech-like signal, see tests/test_processing.py):
* NS: SNR of speech in white noise (best 48-tap linear fit of the clean speech vs the rest)
  NS off / on, and the attenuation of noise alone;
* AGC: gain reached on a -54 dBFS talker after 10 s;
* AEC: ERLE (capture / output power after 3 s) for echo delays of 60, 150 and 250 ms;
* delay: of the processed path against the input (cross-correlation peak).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from softphone.media.levels import frame_level
from softphone.media.processing import AudioProcessor, load_backend
from softphone.media.resampler import Resampler
from softphone.media.tones import SoundMixer, busy_tone, ringback, ringtone

RATE = 8000
FRAME = 160


def speechlike(seconds: float, seed: int, peak: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = (
        140
        + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
        + 10 * np.sin(2 * np.pi * 3.1 * t)
    )
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    f1 = 500 + 200 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6))
    f2 = 1500 + 400 * np.sin(2 * np.pi * 0.9 * t + rng.uniform(0, 6))
    x = np.zeros(n)
    for k in range(1, 25):
        fk = k * f0
        a = np.exp(-(((fk - f1) / 150) ** 2)) + 0.6 * np.exp(-(((fk - f2) / 250) ** 2)) + 0.05
        x += np.where(fk < 3800, a / np.sqrt(k), 0.0) * np.sin(k * phase)
    x *= np.clip(np.sin(2 * np.pi * 2.0 * t) ** 2 * 1.4 - 0.15, 0, 1)
    return np.asarray(np.rint(x / np.abs(x).max() * peak * 32767), dtype=np.int16)


def white(n: int, rms: float, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(n) * rms
    return np.asarray(np.rint(x), dtype=np.int16)


def dbfs(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) / 32768**2 + 1e-20))


def fit_snr(clean: np.ndarray, y: np.ndarray, start: int, stop: int, taps: int = 48) -> float:
    a = clean.astype(np.float64)
    b = y.astype(np.float64)
    seg = a[start:stop]
    lag = int(np.argmax([np.dot(seg, b[start + d : stop + d]) for d in range(200)]))
    base = max(lag - taps // 2, 0)
    x = np.stack([a[start - j : stop - j] for j in range(taps)], axis=1)
    target = b[start + base : stop + base]
    coef, *_ = np.linalg.lstsq(x, target, rcond=None)
    fit = x @ coef
    return float(10 * np.log10(np.sum(fit**2) / np.sum((target - fit) ** 2)))


def run(p: AudioProcessor, near: np.ndarray, far: np.ndarray | None = None) -> np.ndarray:
    out = []
    for i in range(0, near.size, FRAME):
        if far is not None:
            p.process_render(far[i : i + FRAME])
        out.append(p.process_capture(near[i : i + FRAME]))
    return np.concatenate(out)


def delay_samples(x: np.ndarray, y: np.ndarray) -> int:
    a = x[RATE : 5 * RATE].astype(np.float64)
    return int(np.argmax([np.dot(a, y[RATE + d : 5 * RATE + d]) for d in range(200)]))


def timed(step: Callable[[int], object], frames: int) -> tuple[np.ndarray, np.ndarray]:
    wall = np.empty(frames)
    cpu = np.empty(frames)
    for i in range(frames):
        t0 = time.perf_counter_ns()
        c0 = time.thread_time_ns()
        step(i)
        cpu[i] = time.thread_time_ns() - c0
        wall[i] = time.perf_counter_ns() - t0
    return wall[50:] / 1000, cpu[50:] / 1000


def row(label: str, wall: np.ndarray, cpu: np.ndarray) -> str:
    return (
        f"{label:30} {np.median(wall):8.1f} {np.percentile(wall, 99):8.1f} "
        f"{np.median(cpu):8.1f} {np.percentile(cpu, 99):8.1f}"
    )


def bench_costs(seconds: float) -> None:
    far = speechlike(seconds, seed=2, peak=0.3)
    near = (far // 2 + white(far.size, 300, seed=3)).astype(np.int16)
    frames = far.size // FRAME
    print(f"\nCost per 20 ms frame at 8 kHz, {frames} frames (µs)")
    print(f"{'configuration':30} {'wall p50':>8} {'wall p99':>8} {'cpu p50':>8} {'cpu p99':>8}")
    up, down = Resampler(RATE, 16000), Resampler(16000, RATE)

    def resample_only(i: int) -> object:
        return down.process(up.process(near[i * FRAME : (i + 1) * FRAME]))

    print(row("resampling only (8k-16k-8k)", *timed(resample_only, frames)))
    for label, flags in (
        ("noise suppression", (False, True, False)),
        ("automatic gain control", (False, False, True)),
        ("echo cancellation (+render)", (True, False, False)),
        ("AEC + NS + AGC (default)", (True, True, True)),
    ):
        p = AudioProcessor(*flags)

        def step(i: int, p: AudioProcessor = p) -> object:
            p.process_render(far[i * FRAME : (i + 1) * FRAME])
            return p.process_capture(near[i * FRAME : (i + 1) * FRAME])

        print(row(label, *timed(step, frames)))


def bench_effects() -> None:
    print("\nEffect")
    speech = speechlike(10.0, seed=0, peak=0.3)
    for rms in (300, 800, 2000):
        noise = white(speech.size, rms, seed=5)
        noisy = np.clip(speech.astype(np.int32) + noise, -32768, 32767).astype(np.int16)
        w = (3 * RATE, 9 * RATE)
        off = fit_snr(speech, run(AudioProcessor(False, False, False), noisy), *w)
        on = {
            lv: fit_snr(speech, run(AudioProcessor(False, True, False, ns_level=lv), noisy), *w)
            for lv in range(4)
        }
        alone = run(AudioProcessor(False, True, False), noise)
        att = dbfs(noise[3 * RATE :]) - dbfs(alone[3 * RATE :])
        levels = " ".join(f"L{lv} {v:+.1f}" for lv, v in on.items())
        print(
            f"NS  white noise {20 * np.log10(rms / 32768):6.1f} dBFS: SNR off {off:5.1f} dB, "
            f"on {levels} dB; noise alone -{att:.1f} dB (level 1)"
        )
    for peak in (0.003, 0.01, 0.1):
        quiet = speechlike(10.0, seed=1, peak=peak)
        for ns in (False, True):
            p = AudioProcessor(False, ns, True)
            out = run(p, quiet)
            print(
                f"AGC talker {dbfs(quiet):6.1f} dBFS, NS {'on ' if ns else 'off'}: "
                f"output {dbfs(out[8 * RATE :]):6.1f} dBFS after 8 s "
                f"(gain {p.agc_gain_db:+.1f} dB)"
            )
    far = speechlike(12.0, seed=2, peak=0.3)
    for delay_ms in (60, 150, 250):
        d = delay_ms * RATE // 1000
        delayed = np.concatenate([np.zeros(d), far[:-d].astype(np.float64)])
        echo = np.convolve(delayed, [0.5, 0.2, -0.1, 0.05])[: far.size]
        near = np.rint(echo + white(far.size, 30, seed=3)).astype(np.int16)
        for flags in ((True, False, False), (True, True, True)):
            out = run(AudioProcessor(*flags), near, far)
            per_s = [
                dbfs(near[k * RATE : (k + 1) * RATE]) - dbfs(out[k * RATE : (k + 1) * RATE])
                for k in range(12)
            ]
            erle = dbfs(near[3 * RATE :]) - dbfs(out[3 * RATE :])
            label = "AEC" if flags == (True, False, False) else "AEC+NS+AGC"
            print(
                f"{label:10} echo delay {delay_ms:3d} ms: ERLE {erle:5.1f} dB after 3 s "
                f"(1st s {per_s[0]:.1f}, 2nd s {per_s[1]:.1f})"
            )
    talk = speechlike(6.0, seed=4, peak=0.3)
    for label, flags in (
        ("AGC", (False, False, True)),
        ("NS", (False, True, False)),
        ("AEC", (True, False, False)),
        ("all", (True, True, True)),
    ):
        out = run(AudioProcessor(*flags), talk, np.zeros_like(talk))
        print(f"delay of the processed path, {label:3}: {delay_samples(talk, out) / 8:.2f} ms")


def bench_device_side() -> None:
    print("\nDevice-thread helpers (µs per 20 ms frame)")
    rng = np.random.default_rng(1)
    frames = [rng.integers(-3000, 3000, FRAME).astype(np.int16) for _ in range(64)]

    def level_step(i: int) -> object:
        return frame_level(frames[i % 64])

    wall, _ = timed(level_step, 5000)
    print(f"frame_level: median {np.median(wall):.2f}, p99 {np.percentile(wall, 99):.2f}")
    for sounds in ([], [ringback()], [ringback(), busy_tone(), ringtone()]):
        m = SoundMixer()
        for s in sounds:
            m.play(s)

        def mix_step(i: int, m: SoundMixer = m) -> object:
            return m.mix(frames[i % 64])

        wall, _ = timed(mix_step, 5000)
        print(
            f"SoundMixer.mix with {len(sounds)} sound(s): median {np.median(wall):.2f}, "
            f"p99 {np.percentile(wall, 99):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per cost run")
    args = parser.parse_args()
    lib = load_backend()
    print(f"backend: pywebrtc_audio from {lib.__file__}")
    bench_costs(args.seconds)
    bench_effects()
    bench_device_side()


if __name__ == "__main__":
    main()
