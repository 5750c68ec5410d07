"""AudioProcessor: pass-through when unavailable/off, and measured NS / AGC / AEC effects.

The effect tests use a synthetic speech-like signal (a gliding 110-170 Hz glottal pulse
train through two moving formants, syllabic 2 Hz envelope with pauses) and measure:

* NS: SNR against white noise, as the power of the best 48-tap linear fit of the clean
  speech over the power of the rest (so the fixed delay and EQ of the path do not count
  as noise), NS on vs NS off through the same path; and the attenuation of noise alone.
* AGC: output level of a -54 dBFS talker after the gain has settled.
* AEC: ERLE = capture power / output power while the far end talks into an echo path
  (60 ms delay, short impulse response), after 3 s of convergence.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest

from softphone.media import processing
from softphone.media.processing import AudioProcessingUnavailable, AudioProcessor

RATE = 8000
FRAME = 160


def _library_reason() -> str | None:
    try:
        processing.load_backend()
    except AudioProcessingUnavailable as exc:
        return exc.reason
    return None


LIBRARY_MISSING = _library_reason()
needs_library = pytest.mark.skipif(
    LIBRARY_MISSING is not None, reason=f"pywebrtc-audio unavailable: {LIBRARY_MISSING}"
)


@functools.cache
def speechlike(seconds: float, seed: int, peak: float) -> np.ndarray:
    """Voiced, formant-shaped, syllabic test signal peaking at ``peak`` (fraction of FS)."""
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
    out = np.asarray(np.rint(x / np.abs(x).max() * peak * 32767), dtype=np.int16)
    out.flags.writeable = False
    return out


def white(n: int, rms: float, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(n) * rms
    return np.asarray(np.rint(x), dtype=np.int16)


def dbfs(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) / 32768**2 + 1e-20))


def run(p: AudioProcessor, near: np.ndarray, far: np.ndarray | None = None) -> np.ndarray:
    out = []
    for i in range(0, near.size, FRAME):
        if far is not None:
            p.process_render(far[i : i + FRAME])
        out.append(p.process_capture(near[i : i + FRAME]))
    return np.concatenate(out)


def fit_snr(clean: np.ndarray, y: np.ndarray, start: int, stop: int, taps: int = 48) -> float:
    """SNR (dB) of ``y`` against the best ``taps``-tap linear filter of ``clean``."""
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


# -- pass-through ---------------------------------------------------------------------------


def test_unavailable_library_means_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise AudioProcessingUnavailable("pywebrtc-audio is not installed (test)")

    monkeypatch.setattr(processing, "load_backend", broken)
    p = AudioProcessor()
    assert not p.available
    assert not p.active
    assert p.unavailable_reason == "pywebrtc-audio is not installed (test)"
    frame = white(FRAME, 1000, 1)
    p.process_render(frame)
    assert p.process_capture(frame) is frame
    p.noise_suppression = False  # switches still work as settings
    assert not p.noise_suppression
    assert p.agc_gain_db is None
    st = p.stats
    assert (st.capture_frames, st.processed_frames, st.render_frames) == (1, 0, 0)
    assert "unavailable" in repr(p)


def test_load_backend_caches_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processing._Backend, "module", None)
    monkeypatch.setattr(processing._Backend, "error", None)
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # "not installed"
    with pytest.raises(AudioProcessingUnavailable, match=r"not installed.*pywebrtc-audio>=0\.2"):
        processing.load_backend()
    monkeypatch.delitem(sys.modules, "pywebrtc_audio")
    with pytest.raises(AudioProcessingUnavailable):  # cached, not retried
        processing.load_backend()
    p = AudioProcessor()
    assert not p.available
    assert "not installed" in (p.unavailable_reason or "")


@needs_library
def test_all_switches_off_is_pass_through() -> None:
    p = AudioProcessor(echo_cancellation=False, noise_suppression=False, auto_gain=False)
    assert p.available
    assert not p.active
    frame = white(FRAME, 1000, 2)
    assert p.process_capture(frame) is frame
    assert p.stats.processed_frames == 0
    assert p.speech_probability is None


@needs_library
def test_frames_are_validated_and_output_shape_kept() -> None:
    p = AudioProcessor()
    out = p.process_capture(white(FRAME, 1000, 3))
    assert out.dtype == np.int16
    assert out.shape == (FRAME,)
    assert p.process_capture(white(80, 1000, 3)).shape == (80,)  # 10 ms works too
    with pytest.raises(ValueError, match="10 ms"):
        p.process_capture(np.zeros(100, dtype=np.int16))
    with pytest.raises(ValueError, match="int16"):
        p.process_capture(np.zeros(FRAME, dtype=np.float32))
    with pytest.raises(ValueError, match="rate"):
        AudioProcessor(rate=44100)
    # Native WebRTC rates skip the resampling; read-only frames (device buffers) are fine.
    ro = white(320, 1000, 4)
    ro.flags.writeable = False
    wide = AudioProcessor(rate=16000)
    wide.process_render(ro)
    assert wide.process_capture(ro).shape == (320,)
    with pytest.raises(ValueError, match="ns_level"):
        AudioProcessor(ns_level=4)


# -- noise suppression ----------------------------------------------------------------------


@needs_library
def test_noise_suppression_improves_snr_of_speech_in_white_noise() -> None:
    speech = speechlike(10.0, seed=0, peak=0.3)
    noise = white(speech.size, 800, seed=5)  # input SNR ~8 dB
    noisy = np.clip(speech.astype(np.int32) + noise, -32768, 32767).astype(np.int16)
    window = (3 * RATE, 9 * RATE)  # after 3 s of noise estimation
    snr_in = fit_snr(speech, noisy, *window)
    off = run(AudioProcessor(False, False, False), noisy)  # untouched
    p = AudioProcessor(echo_cancellation=False, noise_suppression=True, auto_gain=False)
    on = run(p, noisy)
    snr_off = fit_snr(speech, off, *window)
    snr_on = fit_snr(speech, on, *window)
    assert snr_in == pytest.approx(8.0, abs=0.5)
    assert snr_on - snr_off >= 3.0, (snr_in, snr_off, snr_on)  # measured: +4.5 dB
    # Noise alone is pushed down by > 10 dB (level 1 = 12 dB of suppression; measured 12.8).
    alone = run(AudioProcessor(False, True, False), noise)
    assert dbfs(noise[3 * RATE :]) - dbfs(alone[3 * RATE :]) >= 10.0
    assert p.speech_probability is not None
    assert 0.0 <= p.speech_probability <= 1.0


@needs_library
def test_noise_suppression_level_sets_the_attenuation() -> None:
    noise = white(4 * RATE, 800, seed=6)
    att = []
    for level in (0, 3):
        out = run(AudioProcessor(False, True, False, ns_level=level), noise)
        att.append(dbfs(noise[2 * RATE :]) - dbfs(out[2 * RATE :]))
    assert 4 <= att[0] <= 9  # ~6 dB
    assert att[1] >= 18  # ~21 dB


# -- automatic gain control -----------------------------------------------------------------


@needs_library
def test_agc_raises_a_quiet_talker() -> None:
    quiet = speechlike(10.0, seed=1, peak=0.01)  # about -54 dBFS RMS
    p = AudioProcessor(echo_cancellation=False, noise_suppression=False, auto_gain=True)
    out = run(p, quiet)
    gain = dbfs(out[8 * RATE :]) - dbfs(quiet[8 * RATE :])
    assert gain >= 20.0, gain  # measured: +33 dB after 10 s (at most 6 dB/s)
    assert p.agc_gain_db is not None
    assert p.agc_gain_db >= 20.0


@needs_library
def test_agc_also_works_with_noise_suppression_on() -> None:
    quiet = speechlike(10.0, seed=1, peak=0.01)
    out = run(AudioProcessor(False, True, True), quiet)
    assert dbfs(out[8 * RATE :]) - dbfs(quiet[8 * RATE :]) >= 20.0


@needs_library
def test_agc_leaves_a_normal_talker_nearly_alone() -> None:
    loud = speechlike(6.0, seed=2, peak=0.5)  # about -20 dBFS RMS
    out = run(AudioProcessor(False, False, True), loud)
    # AGC2 starts at +15 dB and comes down (at most 6 dB/s): measured +12 dB in the first
    # 0.5 s (its limiter holds the peaks at full scale), +5 dB from 2 s on.
    assert abs(dbfs(out[4 * RATE :]) - dbfs(loud[4 * RATE :])) <= 8.0
    assert np.abs(out[3 * RATE :].astype(np.int32)).max() < 32000  # no clipping once settled


# -- echo cancellation ----------------------------------------------------------------------


def echo_scene(seconds: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """(far, near): near = far delayed 60 ms through a short echo path, plus mic hiss."""
    far = speechlike(seconds, seed=2, peak=0.3)
    delay = int(0.060 * RATE)
    delayed = np.concatenate([np.zeros(delay), far[:-delay].astype(np.float64)])
    echo = np.convolve(delayed, [0.5, 0.2, -0.1, 0.05])[: far.size]
    near = np.rint(echo + white(far.size, 30, seed=3)).astype(np.int16)
    return far, near


@needs_library
def test_echo_cancellation_removes_the_echo_of_the_render_signal() -> None:
    far, near = echo_scene()
    p = AudioProcessor(echo_cancellation=True, noise_suppression=False, auto_gain=False)
    out = run(p, near, far)
    erle = dbfs(near[3 * RATE :]) - dbfs(out[3 * RATE :])
    assert erle >= 15.0, erle  # measured: ~26 dB
    st = p.stats
    assert st.render_frames == st.capture_frames == st.processed_frames == far.size // FRAME
    assert st.render_missing == 0
    assert st.render_dropped == 0
    # Control: without AEC the echo goes through.
    plain = run(AudioProcessor(False, False, False), near, far)
    assert abs(dbfs(near[3 * RATE :]) - dbfs(plain[3 * RATE :])) < 1.0


@needs_library
def test_echo_cancellation_with_all_features_on() -> None:
    far, near = echo_scene()
    out = run(AudioProcessor(), near, far)
    assert dbfs(near[3 * RATE :]) - dbfs(out[3 * RATE :]) >= 12.0  # measured: ~23 dB


@needs_library
def test_echo_canceller_keeps_near_speech_when_the_far_end_is_silent() -> None:
    talk = speechlike(6.0, seed=4, peak=0.3)
    out = run(AudioProcessor(True, False, False), talk, np.zeros_like(talk))
    assert abs(dbfs(out[2 * RATE :]) - dbfs(talk[2 * RATE :])) <= 3.0


@needs_library
def test_render_backlog_is_bounded_and_missing_render_is_counted() -> None:
    p = AudioProcessor(True, False, False, max_render_backlog=10)
    f = white(FRAME, 1000, 7)
    for _ in range(15):
        p.process_render(f)
    st = p.stats
    assert (st.render_frames, st.render_dropped) == (15, 5)
    for _ in range(12):
        p.process_capture(f)
    assert p.stats.render_missing == 2
    # Render frames are ignored while AEC is off.
    p.echo_cancellation = False
    p.process_render(f)
    assert p.stats.render_frames == 15


# -- switches and bookkeeping ---------------------------------------------------------------


@needs_library
def test_switches_take_effect_at_run_time_without_resetting_the_others() -> None:
    noise = white(8 * RATE, 800, seed=8)
    p = AudioProcessor(echo_cancellation=True, noise_suppression=True, auto_gain=False)
    aec = p._aec
    first = run(p, noise[: 3 * RATE], np.zeros(3 * RATE, dtype=np.int16))
    assert dbfs(noise[RATE : 3 * RATE]) - dbfs(first[RATE:]) >= 10  # suppressed
    p.noise_suppression = False
    assert not p.noise_suppression
    second = run(p, noise[3 * RATE : 5 * RATE], np.zeros(2 * RATE, dtype=np.int16))
    assert abs(dbfs(noise[3 * RATE : 5 * RATE]) - dbfs(second)) < 2  # passes again
    assert p._aec is aec  # the echo canceller kept its state
    p.noise_suppression = True
    p.auto_gain = True
    third = run(p, noise[5 * RATE :], np.zeros(3 * RATE, dtype=np.int16))
    assert dbfs(noise[7 * RATE :]) - dbfs(third[2 * RATE :]) >= 5  # suppressed again
    assert p._aec is aec
    assert p.agc_gain_db is not None
    p.echo_cancellation = False
    p.noise_suppression = False
    p.auto_gain = False
    frame = noise[:FRAME]
    assert p.process_capture(frame) is frame
    p.auto_gain = True  # back on: a fresh DSP path
    assert p.process_capture(frame) is not frame


@needs_library
def test_stats_reset_stream_delay_and_repr() -> None:
    p = AudioProcessor(stream_delay_ms=40)
    assert p.stream_delay_ms == 40
    p.stream_delay_ms = 80
    assert p._aec is not None
    assert p._aec.stream_delay_ms == 80
    with pytest.raises(ValueError, match="stream_delay_ms"):
        p.stream_delay_ms = -1
    f = white(FRAME, 1000, 9)
    for _ in range(20):
        p.process_render(f)
        p.process_capture(f)
    st = p.stats
    assert st.capture_frames == st.processed_frames == 20
    assert 0 < st.cost_p50_us <= st.cost_p99_us <= st.cost_max_us
    assert st.cost_total_us >= 20 * st.cost_p50_us * 0.5
    old = p._aec
    p.reset()
    assert p._aec is not None
    assert p._aec is not old
    assert "aec=True" in repr(p)


@needs_library
def test_a_library_failure_mid_call_falls_back_to_pass_through() -> None:
    p = AudioProcessor(False, True, False)
    f = white(FRAME, 1000, 10)
    p.process_capture(f)

    class Broken:
        speech_probability = 0.0

        def process(self, audio: np.ndarray) -> np.ndarray:
            raise RuntimeError("boom")

    p._ns = Broken()
    assert p.process_capture(f) is f
    assert not p.available
    assert "boom" in (p.unavailable_reason or "")
    assert p.process_capture(f) is f
