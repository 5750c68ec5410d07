"""Real-time health and round-trip delay of PyAudioDevice through real PortAudio.

Run: .venv/bin/python benchmarks/bench_audio_realtime.py [--seconds 60] [--rate 48000]

Without a sound card it builds the virtual devices of tests/audio_env.py (a private
PulseAudio daemon with ``type file`` ALSA PCMs on top: real-time clock, bit-exact files);
needs ``pulseaudio pulseaudio-utils libasound2-plugins`` and PyAudio. ``--system`` uses the
machine's default devices instead (health part only).

(a) Callback health: the device runs for ``--seconds`` at ``--rate`` with ``--frame-ms``
    buffers while a CPU-bound pure-Python thread runs in the same process and another
    thread feeds playback (and drains capture) every 20 ms. Reports PortAudio's status
    flags (input overflows, output underflows), playout underruns, callback durations.
    Target: 0 overruns and 0 underruns.
(b) Round trip: noise bursts written as the microphone signal come back in the speaker
    file; the delay of each burst is measured on one timeline (first-callback times of
    both streams), from the moment the sample reached the microphone (one buffer before
    the callback that delivered it) to the callback that produced it for the speaker.
    * loopback: read_frame -> write_frame in this process (the device's own share);
    * echo: a real call to the echo line of an in-process audin-core, engine included.
    Target: median <= 120 ms. PortAudio's reported output latency comes on top for the
    sound that actually leaves a real speaker.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from softphone.media.device import FRAME_SAMPLES  # noqa: E402
from softphone.media.devices import AudioSystem  # noqa: E402
from softphone.media.pyaudio_device import GIL_SWITCH_INTERVAL, PyAudioDevice  # noqa: E402
from tests.audio_env import (  # noqa: E402
    VirtualAudio,
    VirtualAudioUnavailable,
    bandlimited_noise,
    find_lag,
)

ECHO = "+15550100"
LINE_A = "+15550150"
ROUND_TRIP_TARGET_MS = 120.0


def burn(stop: threading.Event, counter: list[int]) -> None:
    """A CPU-bound pure-Python thread: holds the GIL except at the interpreter's switches."""
    n = 0
    while not stop.is_set():
        total = 0
        for i in range(2000):
            total += i * i
        n += 1
    counter.append(n)


def feed(device: PyAudioDevice, stop: threading.Event, frames: NDArray[np.int16]) -> None:
    """The engine's side at real time: every 20 ms drain capture and queue one frame."""
    period = 0.020
    deadline = time.monotonic()
    k = 0
    while not stop.is_set():
        while device.read_frame() is not None:
            pass
        device.write_frame(frames[k % len(frames)])
        k += 1
        deadline += period
        delay = deadline - time.monotonic()
        if delay > 0:
            stop.wait(delay)


def health(
    system: AudioSystem,
    env: VirtualAudio | None,
    seconds: float,
    rate: int,
    frame_ms: int,
    switch_interval: float | None,
) -> dict[str, float]:
    if env is not None:
        env.write_input(
            env.MIC, bandlimited_noise(2.0, rate, seed=1), rate=rate, pad_seconds=seconds + 30
        )
        device = PyAudioDevice(
            system,
            env.MIC,
            env.SPEAKER,
            rate=rate,
            frame_ms=frame_ms,
            switch_interval=switch_interval,
        )
    else:
        device = PyAudioDevice(system, frame_ms=frame_ms, switch_interval=switch_interval)
    frames = bandlimited_noise(1.0, 8000, seed=2).reshape(-1, FRAME_SAMPLES)
    stop = threading.Event()
    burned: list[int] = []
    burner = threading.Thread(target=burn, args=(stop, burned), name="cpu-burner")
    feeder = threading.Thread(target=feed, args=(device, stop, frames), name="feeder")
    print(
        f"(a) callback health: {seconds:g} s, {device.input_info.name} -> "
        f"{device.output_info.name}, {frame_ms} ms buffers, a CPU-bound thread running ..."
    )
    burner.start()
    device.start()
    print(f"    GIL switch interval during the run: {sys.getswitchinterval() * 1000:g} ms")
    latency = device.latency()
    feeder.start()
    started = time.monotonic()
    try:
        stop.wait(seconds)
    finally:
        stop.set()
        feeder.join()
        burner.join()
        device.stop()
    elapsed = time.monotonic() - started
    rt = device.realtime_stats()
    st = device.stats()
    expected = elapsed * 1000 / frame_ms
    print(
        f"    streams at {rt.input_rate} / {rt.output_rate} Hz; PortAudio latency "
        f"in {latency[0] * 1000:.1f} ms, out {latency[1] * 1000:.1f} ms; "
        f"burner loops {burned[0] if burned else 0}"
    )
    print(
        f"    callbacks in {rt.input_callbacks} / out {rt.output_callbacks} "
        f"(expected ~{expected:.0f} each)"
    )
    return {
        "PortAudio input overflows": rt.pa_input_overflows,
        "PortAudio output underflows": rt.pa_output_underflows,
        "playout underruns": st.playback_underruns,
        "capture frames dropped": st.capture_dropped,
        "callback errors": rt.callback_errors,
        "max callback (ms)": rt.max_callback_us / 1000,
        "p99 callback (ms)": rt.p99_callback_us / 1000,
    }


def burst_signal(
    rate: int, count: int, spacing: float, length: float
) -> tuple[NDArray[np.int16], list[tuple[int, NDArray[np.int16]]]]:
    """``count`` noise bursts of ``length`` s every ``spacing`` s (different noise each)."""
    total = int(rate * (0.5 + count * spacing))
    signal = np.zeros(total, dtype=np.int16)
    bursts = []
    for k in range(count):
        start = int(rate * (0.5 + k * spacing))
        burst = bandlimited_noise(length, rate, seed=100 + k)
        signal[start : start + len(burst)] = burst
        bursts.append((start, burst))
    return signal, bursts


def burst_delays(
    bursts: list[tuple[int, NDArray[np.int16]]],
    output: NDArray[np.int16],
    device: PyAudioDevice,
) -> tuple[list[float], list[float]]:
    """Delay (ms) of each burst from the microphone to the speaker callback, and the scores.

    Timeline from the device's callback log: input sample ``p`` reached the microphone
    ``(fpb - p % fpb) / rate`` before the callback that delivered it started; output sample
    ``q`` is due ``(q % fpb) / rate`` after the callback that produced it started. So a
    system with no buffering at all would show one input buffer (20 ms) here.
    """
    in_starts, in_fpb, in_rate = device.callback_log("input")
    out_starts, out_fpb, out_rate = device.callback_log("output")
    delays, scores = [], []
    for start, burst in bursts:
        cb_in = start // in_fpb
        if cb_in >= len(in_starts):
            continue
        spoken = in_starts[cb_in] / 1e9 - (in_fpb - start % in_fpb) / in_rate
        # Search the output from the callback running when the burst was captured on.
        first_cb = int(np.searchsorted(out_starts, in_starts[cb_in]))
        lo = max(0, (first_cb - 4) * out_fpb)
        window = output[lo : lo + len(burst) + out_rate]
        if len(window) < len(burst):
            continue
        lag, score = find_lag(burst, window)
        scores.append(score)
        if score < 0.8:
            continue
        q = lo + lag
        if q // out_fpb >= len(out_starts):
            continue
        due = out_starts[q // out_fpb] / 1e9 + (q % out_fpb) / out_rate
        delays.append((due - spoken) * 1000)
    return delays, scores


def loopback(system: AudioSystem, env: VirtualAudio, rate: int, frame_ms: int) -> dict[str, float]:
    signal, bursts = burst_signal(rate, 10, 0.4, 0.2)
    env.write_input(env.MIC, signal, rate=rate)
    device = PyAudioDevice(system, env.MIC, env.SPEAKER, rate=rate, frame_ms=frame_ms)
    print("(b1) round trip, local loopback (read_frame -> write_frame in this process) ...")
    end = len(signal) / rate + 0.5
    with device:
        started = time.monotonic()
        while time.monotonic() - started < end:
            while (frame := device.read_frame()) is not None:
                device.write_frame(frame)
            time.sleep(0.002)
        out_latency = device.latency()[1]
    output = env.read_output(env.SPEAKER)
    delays, scores = burst_delays(bursts, output, device)
    return report_delays(delays, scores, len(bursts), out_latency)


async def echo_call(device: PyAudioDevice, seconds: float, latencies: list[float]) -> None:
    from softphone.engine import Operator, token_url_provider
    from softphone.server import CoreConfig, CoreServer
    from softphone.server.core import CoreTimings

    with tempfile.TemporaryDirectory() as data:
        core = CoreServer(
            CoreConfig(data_dir=Path(data), port=0, sandbox=True, timings=CoreTimings())
        )
        await core.start()
        try:
            op = Operator(
                core.url,
                token_url_provider(core.url + "/sandbox/token", body={"operatorRef": "bench"}),
                audio=lambda _call: device,
            )
            op.on("error", lambda exc: print(f"    operator error: {exc}"))
            try:
                numbers = await op.list_phone_numbers()
                await op.go_online([n.id for n in numbers if n.phone_number == LINE_A])
                call = await op.dial(ECHO, caller_id=LINE_A)
                if not await call.wait_started(10):
                    raise RuntimeError("the echo call did not start")
                # The engine opens the device in a worker thread once the call is active.
                async with asyncio.timeout(10):
                    while not device.running:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and device.running:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                latencies.append(device.latency()[1])
                stats = call.stats
                await call.hangup()
                print(f"    call stats: {stats}")
            finally:
                await op.close()
        finally:
            await core.stop()


def echo(system: AudioSystem, env: VirtualAudio, rate: int, frame_ms: int) -> dict[str, float]:
    signal, bursts = burst_signal(rate, 10, 0.5, 0.2)
    env.write_input(env.MIC, signal, rate=rate)
    device = PyAudioDevice(system, env.MIC, env.SPEAKER, rate=rate, frame_ms=frame_ms)
    print("(b2) round trip through the echo line of an in-process audin-core ...")
    latencies: list[float] = []
    asyncio.run(echo_call(device, len(signal) / rate + 0.8, latencies))
    device.stop()  # the engine stopped it already; idempotent
    output = env.read_output(env.SPEAKER)
    delays, scores = burst_delays(bursts, output, device)
    return report_delays(delays, scores, len(bursts), latencies[0] if latencies else 0.0)


def report_delays(
    delays: list[float], scores: list[float], count: int, out_latency: float
) -> dict[str, float]:
    print(
        f"    bursts found {len(delays)}/{count}, correlation min "
        f"{min(scores) if scores else 0:.3f}; mic -> speaker callback, ms: "
        + ", ".join(f"{d:.0f}" for d in delays)
    )
    if not delays:
        return {"median round trip (ms)": float("nan")}
    median = statistics.median(delays)
    print(
        f"    + PortAudio output latency {out_latency * 1000:.0f} ms: about "
        f"{median + out_latency * 1000:.0f} ms until the sound leaves the card (median)"
    )
    return {
        "median round trip (ms)": median,
        "max round trip (ms)": max(delays),
        "median incl. output latency (ms)": median + out_latency * 1000,
    }


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="health run length")
    parser.add_argument("--rate", type=int, default=48000, help="device rate (virtual devices)")
    parser.add_argument("--frame-ms", type=int, default=20, help="PortAudio buffer length")
    parser.add_argument("--system", action="store_true", help="use the real default devices")
    parser.add_argument("--skip-health", action="store_true")
    parser.add_argument("--skip-roundtrip", action="store_true")
    parser.add_argument(
        "--keep-switch-interval",
        action="store_true",
        help="do not let the device lower the GIL switch interval (Python's default: 5 ms)",
    )
    args = parser.parse_args()
    switch_interval = None if args.keep_switch_interval else GIL_SWITCH_INTERVAL

    env: VirtualAudio | None = None
    if not args.system:
        try:
            env = VirtualAudio.start()
        except VirtualAudioUnavailable as exc:
            raise SystemExit(f"cannot build the virtual devices: {exc}") from exc
    results: list[tuple[str, float, float]] = []
    try:
        with AudioSystem() as system:
            if not args.skip_health:
                h = health(system, env, args.seconds, args.rate, args.frame_ms, switch_interval)
                for name, value in h.items():
                    no_target = name.endswith("callback (ms)")
                    results.append((name, value, float("inf") if no_target else 0.0))
            if not args.skip_roundtrip and env is not None:
                lb = loopback(system, env, args.rate, args.frame_ms)
                results.append(
                    (
                        "loopback: " + "median round trip (ms)",
                        lb["median round trip (ms)"],
                        ROUND_TRIP_TARGET_MS,
                    )
                )
                ec = echo(system, env, args.rate, args.frame_ms)
                results.append(
                    (
                        "echo line: median round trip (ms)",
                        ec["median round trip (ms)"],
                        ROUND_TRIP_TARGET_MS,
                    )
                )
                if "max round trip (ms)" in ec:
                    results.append(
                        ("echo line: max round trip (ms)", ec["max round trip (ms)"], float("inf"))
                    )
    finally:
        if env is not None:
            env.stop()

    print()
    print(f"{'figure':42} {'value':>10} {'target':>10}  verdict")
    for name, value, target in results:
        shown_target = "-" if target == float("inf") else f"<= {target:g}"
        mark = "" if target == float("inf") else verdict(value, target)
        print(f"{name:42} {value:10.2f} {shown_target:>10}  {mark}")


if __name__ == "__main__":
    main()
