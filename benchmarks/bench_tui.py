"""The operator console (``audin-phone``): start-up time, CPU, and audio health in a call.

Run: .venv/bin/python benchmarks/bench_tui.py [--runs 5] [--idle 20] [--call 20] [--long-call 60]

Starts ``audin-core --sandbox`` as its own process and the virtual sound devices of
tests/audio_env.py (a private PulseAudio daemon: real PortAudio, real-time clock; needs
``pulseaudio pulseaudio-utils libasound2-plugins`` and PyAudio). The microphone is fed with
telephone-band noise (so the meters move); the default audio processing (echo
cancellation, noise suppression, gain control) and the default rate policy are on. (b) and
(c) run on three kinds of device (``--devices``):

* ``server``: the sound server's device ``pulse``, what a desktop with PulseAudio or
  PipeWire offers by default: the console opens it at the call's 8 kHz and the server
  converts (rate "auto");
* ``card``: ``paced_card``, one device with both directions, as a sound card or a USB
  headset opened directly (``hw:0,0``), at 48 kHz (rate "auto" on an ALSA device): the
  console converts 48 <-> 8 kHz in its audio callback (one full-duplex stream);
* ``pair``: ``paced_in`` / ``paced_out``, a microphone and a speaker that are two devices
  (e.g. a USB microphone and the laptop's speakers), at 48 kHz: two streams, each with
  its own callback.

(a) Start-up: ``audin-phone`` is started ``--runs`` times in a pseudo-terminal of 120x40;
    the time from the spawn of the process to the first frame on the terminal that shows
    the account's numbers (imports, app, first screen, token and numbers from the core).
    Target (issue 6): median <= 1.0 s.
(b) CPU: the same process in its pseudo-terminal, online and idle for ``--idle`` s, then in
    an echo call typed through the terminal (meters updating at 5 Hz) for ``--call`` s;
    ``--repeat N`` runs the calls N times, the devices interleaved, and reports medians.
    The process's CPU time (all threads, /proc/PID/stat) over wall time, in % of one core,
    and in a call its share per group of threads (main loop, audio callbacks, the sound
    server's client threads, other). Targets: <= 2 % idle, <= 10 % in a call. Beside each,
    the devices' floor: a child process opens the same PortAudio streams on the same
    devices at the same rate with callbacks that do nothing, and its CPU is what PortAudio,
    the ALSA plugins and the sound server's client library cost before any work of the
    console's (on these virtual devices: pulse-backed ALSA plugins, so libpulse's threads
    run in the process even on "card" and "pair").
(c) Audio health: a ``--long-call`` s echo call driven through the console's keys (Textual
    headless, in this process, so the device's counters can be read) on the same virtual
    devices: PortAudio input overflows and output underflows, playout underruns.
    Target: 0 each. This process's CPU over the call is shown too (no terminal output).
(d) The same echo call through the SDK alone (no console) for ``--long-call`` s: the
    engine's share of (b) and (c), and its audio counters for comparison.
    ``--skip startup cpu long sdk`` leaves parts out; (d) runs on the card.

The machine's load average is printed with the figures: on a shared machine other work
inflates start-up times and CPU shares. And the machine's own speed drifts (on the
development VM start-up took 0.67 s one day and 1.03 s the next with the same code, and the
sound server's CPU in the same call rose from 1.6 to 2.5 %), so (0) measures it first: the
CPU time of one frame's audio work (echo canceller reference and processing of a captured
frame, μ-law encoding) run every 20 ms like in a call, where it starts from cold caches,
and back to back. Compare runs of (a)-(d) only with similar (0) figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.audio_env import (  # noqa: E402
    AUTO_RATE,
    VirtualAudio,
    VirtualAudioUnavailable,
    bandlimited_noise,
)
from tests.conftest import wait_until  # noqa: E402
from tests.ptyterm import (  # noqa: E402
    CLOCK_TICKS,
    Terminal,
    console_command,
    process_cpu_seconds,
)

ECHO = "+15550100"
FIRST_NUMBER = "+15550150"  # on screen once the account's numbers are loaded
SIZE = (120, 40)
STARTUP_TARGET_S = 1.0
IDLE_CPU_TARGET = 2.0
CALL_CPU_TARGET = 10.0
START_S = 2.0  # the first seconds of a call: streams starting, buffers filling


@dataclass
class Figure:
    name: str
    value: float
    target: float | None = None  # an upper bound; None: no target
    unit: str = ""

    def verdict(self) -> str:
        if self.target is None:
            return ""
        ok = self.value <= self.target
        ratio = self.value / self.target if self.target else float("nan")
        shown = f"{ratio:.2f}x of target" if self.target else ""
        return f"{'OK ' if ok else 'MISS'} {shown}".rstrip()


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)

    def add(self, name: str, value: float, target: float | None = None, unit: str = "") -> None:
        self.figures.append(Figure(name, value, target, unit))
        shown = "-" if target is None else f"<= {target:g}"
        print(f"  {name:46} {value:10.3f} {unit:4} {shown:>8}  {self.figures[-1].verdict()}")


def median_of(figures: list[Figure]) -> list[Figure]:
    """One figure per name, in first-seen order: the median of its runs (and the range in
    its name when there were several)."""
    by_name: dict[str, list[Figure]] = {}
    for figure in figures:
        by_name.setdefault(figure.name, []).append(figure)
    merged = []
    for name, runs in by_name.items():
        values = [f.value for f in runs]
        label = name
        if len(values) > 1:
            label = f"{name} median of {len(values)} ({min(values):.1f}-{max(values):.1f})"
        first = runs[0]
        merged.append(Figure(label, statistics.median(values), first.target, first.unit))
    return merged


def thread_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of ``pid`` so far: thread id -> (name, seconds)."""
    seconds = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        seconds[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return seconds


def thread_shares(
    pid: int, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall: float
) -> dict[str, float]:
    """% of one core between two readings, per group of threads: the process's main thread
    (the engine and the console), PortAudio's callback threads (unnamed: they carry the
    process's name), libpulse's ``threaded-ml`` (one per ALSA pulse PCM), the others
    (Textual's input and output threads, workers)."""
    shares = dict.fromkeys(("main loop", "audio callbacks", "sound server client", "other"), 0.0)
    main_name = after.get(pid, ("", 0.0))[0]
    for tid, (name, seconds) in after.items():
        used = seconds - before.get(tid, (name, 0.0))[1]
        if tid == pid:
            group = "main loop"
        elif name == "threaded-ml":
            group = "sound server client"
        elif name == main_name:
            group = "audio callbacks"
        else:
            group = "other"
        shares[group] += 100 * used / wall
    return shares


def machine_speed(results: Results, frames: int = 250) -> None:
    """(0): CPU time of one frame's audio work, every 20 ms (cold) and back to back (hot)."""
    import numpy as np

    from softphone.media.g711 import encode_mulaw
    from softphone.media.processing import AudioProcessor

    rng = np.random.default_rng(0)
    pcm = [(rng.standard_normal(160) * 3000).astype(np.int16) for _ in range(50)]
    processor = AudioProcessor(8000)

    def frame(i: int) -> None:
        processor.process_render(pcm[i % 50])
        encode_mulaw(processor.process_capture(pcm[(i + 7) % 50])).tobytes()

    print(f"(0) machine speed ({load()})")
    for i in range(100):  # warm up the echo canceller
        frame(i)
    for label, pause in (("every 20 ms (cold)", 0.02), ("back to back (hot)", 0.0)):
        costs = []
        for i in range(frames):
            if pause:
                time.sleep(pause)
            start = time.thread_time_ns()
            frame(i)
            costs.append((time.thread_time_ns() - start) / 1000)
        results.add(f"one frame's audio work, {label}", statistics.median(costs), None, "µs")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min), {os.cpu_count()} CPUs"


# ---------------------------------------------------------------------- the core


class Core:
    """``audin-core --sandbox`` on a free loopback port, as its own process."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "softphone.server.cli",
                "--sandbox",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                "--json",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise SystemExit("audin-core did not start")
        info = json.loads(line)
        self.url: str = info["coreUrl"]
        self.token_url: str = info["tokenUrl"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class Devices:
    """A microphone and speaker of the virtual sound system, and the rate "auto" opens them at
    (the rate the microphone's file must be written at)."""

    kind: str
    label: str
    input: str
    output: str
    rate: int


DEVICES: Final = {
    "server": Devices("server", "server device", VirtualAudio.SERVER, VirtualAudio.SERVER, 8000),
    "card": Devices("card", "card (one device)", VirtualAudio.CARD, VirtualAudio.CARD, AUTO_RATE),
    "pair": Devices(
        "pair",
        "mic + speaker (two devices)",
        VirtualAudio.MIC,
        VirtualAudio.SPEAKER,
        AUTO_RATE,
    ),
}


def console_args(
    core: Core, work: Path, devices: Devices = DEVICES["card"]
) -> tuple[list[str], dict[str, str]]:
    connection = ["--core-url", core.url, "--token-url", core.token_url]
    return console_command(work, connection, input=devices.input, output=devices.output, size=SIZE)


def startup(core: Core, work: Path, runs: int, results: Results) -> None:
    print(f"(a) start-up, {runs} runs ({load()})")
    args, env = console_args(core, work)
    times = []
    for _ in range(runs):
        term = Terminal(args, env)
        try:
            ready = term.wait_for(FIRST_NUMBER, timeout=30)
            times.append(ready - term.started)
        finally:
            term.close()
    print("  runs (s): " + ", ".join(f"{t:.3f}" for t in times))
    results.add(
        "start-up to numbers on screen, median", statistics.median(times), STARTUP_TARGET_S, "s"
    )
    results.add("start-up, slowest run", max(times), None, "s")


def device_floor(devices: Devices, seconds: float) -> float:
    """CPU (% of one core) of a child process that opens the streams a call opens on
    ``devices`` (one full-duplex stream on one device, two on two) with callbacks that do
    nothing."""
    out = subprocess.run(
        [sys.executable, __file__, "--device-floor", devices.kind, f"{seconds:g}"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return float(out.stdout.split()[-1])


def run_device_floor(kind: str, seconds: float) -> None:
    """The child of :func:`device_floor`: prints its CPU share over ``seconds``."""
    from softphone.media.devices import AudioSystem

    devices = DEVICES[kind]
    system = AudioSystem()
    pa, module = system.pyaudio, system.module()
    n = devices.rate // 50  # 20 ms, as the console's streams
    silence = bytes(2 * n)

    def callback(_data: object, _frames: int, _time: object, _status: int) -> tuple[object, int]:
        return (silence, module.paContinue)

    def capture(_data: object, _frames: int, _time: object, _status: int) -> tuple[object, int]:
        return (None, module.paContinue)

    common = {"rate": devices.rate, "channels": 1, "format": module.paInt16, "frames_per_buffer": n}
    mic, speaker = system.find_input(devices.input), system.find_output(devices.output)
    if devices.input == devices.output:
        streams = [
            pa.open(
                input=True,
                output=True,
                input_device_index=mic.index,
                output_device_index=speaker.index,
                stream_callback=callback,
                **common,
            )
        ]
    else:
        streams = [
            pa.open(input=True, input_device_index=mic.index, stream_callback=capture, **common),
            pa.open(
                output=True, output_device_index=speaker.index, stream_callback=callback, **common
            ),
        ]
    time.sleep(START_S)
    t0, c0 = time.monotonic(), time.process_time()
    time.sleep(seconds)
    share = 100 * (time.process_time() - c0) / (time.monotonic() - t0)
    for stream in streams:
        stream.stop_stream()
        stream.close()
    system.close()
    print(f"{share:.3f}")


def cpu(
    core: Core,
    env_audio: VirtualAudio,
    work: Path,
    idle_s: float,
    call_s: float,
    devices: Devices,
) -> Results:
    results = Results()
    rate = devices.rate
    env_audio.write_input(
        VirtualAudio.MIC, bandlimited_noise(call_s + 10, rate, seed=7), rate=rate, pad_seconds=30
    )
    args, env = console_args(core, work, devices)
    term = Terminal(args, env)
    try:
        term.wait_for(FIRST_NUMBER, timeout=30)
        mark = term.mark()
        term.type("o")
        term.wait_for("ONLINE", timeout=15, after=mark)
        if idle_s > 0:
            print(f"(b) CPU idle, online, {idle_s:g} s ({load()})")
            time.sleep(2.0)  # settle after going online (not measured)
            cpu0, t0 = term.cpu_seconds(), time.monotonic()
            time.sleep(idle_s)  # the measurement window
            idle = 100 * (term.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            results.add("CPU idle (% of one core)", idle, IDLE_CPU_TARGET, "%")

        mark = term.mark()
        term.type(ECHO + "d")
        term.wait_for("ACTIVE", timeout=20, after=mark)
        print(
            f"(b) CPU in an echo call on the {devices.label} ({devices.input}, "
            f"{devices.rate} Hz), meters running, {call_s:g} s ({load()})"
        )
        time.sleep(START_S)  # the call's first seconds are not measured
        server = env_audio.pid
        assert server is not None
        pid = term.process.pid
        threads0 = thread_cpu_seconds(pid)
        cpu0, server0, t0 = term.cpu_seconds(), process_cpu_seconds(server), time.monotonic()
        time.sleep(call_s)  # the measurement window
        elapsed = time.monotonic() - t0
        in_call = 100 * (term.cpu_seconds() - cpu0) / elapsed
        server_share = 100 * (process_cpu_seconds(server) - server0) / elapsed
        shares = thread_shares(pid, threads0, thread_cpu_seconds(pid), elapsed)
        results.add(f"CPU in a call, {devices.label} (% of 1 core)", in_call, CALL_CPU_TARGET, "%")
        for group, share in shares.items():
            results.add(f"  of which {group} ({devices.kind})", share, None, "%")
        # Not the console's: the virtual sound server, converting rates on "server" devices.
        results.add(f"  the sound server meanwhile ({devices.kind})", server_share, None, "%")
        mark = term.mark()
        term.type("h")
        term.wait_for("no call", timeout=10, after=mark)
    finally:
        term.close()
    floor = device_floor(devices, call_s)
    results.add(f"  the devices' floor ({devices.kind}): streams doing nothing", floor, None, "%")
    results.add(
        f"  the console's own ({devices.kind}): the call less the floor", in_call - floor, None, "%"
    )
    return results


# ---------------------------------------------------------------------- a long call, in-process


async def long_call(
    core: Core, env_audio: VirtualAudio, work: Path, seconds: float, devices: Devices
) -> Results:
    from softphone.engine import CallState
    from softphone.media.pyaudio_device import PyAudioDevice
    from softphone.tui import TuiConfig, create_app

    results = Results()
    rate = devices.rate
    env_audio.write_input(
        VirtualAudio.MIC, bandlimited_noise(seconds + 10, rate, seed=8), rate=rate, pad_seconds=30
    )
    config = TuiConfig(
        core_urls=(core.url,),
        token_url=core.token_url,
        input_device=devices.input,
        output_device=devices.output,
        history_path=work / "long-call.sqlite3",
    )
    app = create_app(config)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(lambda: app.phone.state.numbers_loaded, 30)
            await pilot.press(*[{"+": "plus"}.get(c, c) for c in ECHO], "d")
            await wait_until(
                lambda: (
                    app.phone.state.call is not None
                    and app.phone.state.call.call.state == CallState.ACTIVE
                ),
                20,
            )
            view = app.phone.state.call
            # The device opens as the call becomes active, in a worker thread.
            await wait_until(lambda: app.operator.audio.active_device is not None, 10)
            device = app.operator.audio.active_device
            assert isinstance(device, PyAudioDevice), "the call is not on the sound card"
            assert device.input_rate == device.output_rate == rate, (
                f"{devices.input} opened at {device.input_rate}/{device.output_rate} Hz, not {rate}"
            )
            print(
                f"(c) a {seconds:g} s echo call through the console on the {devices.label} "
                f"({devices.input}, {rate} Hz) ({load()})"
            )
            cpu0, t0 = time.process_time(), time.monotonic()
            await asyncio.sleep(START_S)  # the streams' start (counted apart below)
            start = device.stats()
            await asyncio.sleep(seconds - START_S)  # the rest of the measurement window
            cpu_share = 100 * (time.process_time() - cpu0) / (time.monotonic() - t0)
            stats, realtime = device.stats(), device.realtime_stats()
            still_up = app.phone.state.call is view
            await pilot.press("h")
            await wait_until(lambda: app.phone.state.call is None, 10)
        assert still_up, "the call ended before the end of the measurement"
        kind = devices.kind
        results.add(f"{kind}: PortAudio streams (1: full duplex)", 1 if realtime.duplex else 2)
        results.add(f"{kind}: PortAudio input overflows", stats.input_overflows, 0)
        results.add(f"{kind}: PortAudio output underflows", stats.output_underflows, 0)
        results.add(f"{kind}: playout underruns", stats.playback_underruns, 0)
        first = start.input_overflows + start.output_underflows + start.playback_underruns
        results.add(f"  of these in the first {START_S:g} s (stream start)", first)
        results.add(f"{kind}: frames played", stats.frames_played)
        # The jitter buffer keeping its delay: frames added or taken out at a pause.
        results.add(f"{kind}: playout frames inserted", stats.playback_inserted)
        results.add(f"{kind}: playout frames dropped", stats.playback_dropped)
        results.add(f"{kind}: longest audio callback", realtime.max_callback_us / 1000, None, "ms")
        results.add(f"{kind}: p99 audio callback", realtime.p99_callback_us / 1000, None, "ms")
        results.add(f"{kind}: CPU of this process, headless (%)", cpu_share, None, "%")
    finally:
        await app.operator.close(force=True)
    return results


async def engine_only(core: Core, env_audio: VirtualAudio, seconds: float) -> Results:
    """The same echo call through the SDK alone (no console): what the engine costs."""
    from softphone.engine import Operator
    from softphone.engine.audio import AudioManager, AudioSettings
    from softphone.media.pyaudio_device import PyAudioDevice

    results = Results()
    rate = AUTO_RATE
    env_audio.write_input(
        VirtualAudio.MIC, bandlimited_noise(seconds + 10, rate, seed=9), rate=rate, pad_seconds=30
    )
    audio = AudioManager(
        backend="pyaudio",
        settings=AudioSettings(
            input=VirtualAudio.CARD,
            output=VirtualAudio.CARD,
            echo_cancellation=os.environ.get("BENCH_AEC", "1") == "1",
            noise_suppression=os.environ.get("BENCH_NS", "1") == "1",
            auto_gain=os.environ.get("BENCH_AGC", "1") == "1",
        ),
    )
    operator = Operator(core.url, core.token_url, audio=audio)
    try:
        call = await operator.dial(ECHO)
        if not await call.wait_started(20):
            raise RuntimeError("the echo call did not start")
        print(f"(d) the same call through the SDK alone, {seconds:g} s ({load()})")
        await asyncio.sleep(START_S)  # the call's first seconds are not measured
        device = audio.active_device
        assert isinstance(device, PyAudioDevice), "the call is not on the sound card"
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)  # the measurement window
        cpu_share = 100 * (time.process_time() - cpu0) / (time.monotonic() - t0)
        stats = device.stats()
        await call.hangup()
        results.add("SDK alone: PortAudio input overflows", stats.input_overflows, 0)
        results.add("SDK alone: PortAudio output underflows", stats.output_underflows, 0)
        results.add("SDK alone: playout underruns", stats.playback_underruns, 0)
        results.add("CPU of the SDK alone in the call (% of 1 core)", cpu_share, None, "%")
    finally:
        await operator.close(force=True)
    return results


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="start-up runs")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds idle (CPU)")
    parser.add_argument("--call", type=float, default=20.0, help="seconds in a call (CPU)")
    parser.add_argument("--long-call", type=float, default=60.0, help="seconds of the long call")
    parser.add_argument("--skip", nargs="*", default=[], choices=["startup", "cpu", "long", "sdk"])
    parser.add_argument(
        "--repeat", type=int, default=1, help="CPU runs per device (the median is reported)"
    )
    parser.add_argument(
        "--devices",
        nargs="+",
        default=list(DEVICES),
        choices=list(DEVICES),
        help="device kinds for (b) and (c)",
    )
    parser.add_argument("--device-floor", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device_floor:  # the child of device_floor(), inside the parent's virtual audio
        run_device_floor(args.device_floor[0], float(args.device_floor[1]))
        return
    try:
        audio = VirtualAudio.start()
    except VirtualAudioUnavailable as exc:
        raise SystemExit(f"cannot build the virtual devices: {exc}") from exc
    all_results = Results()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
            work = Path(tmp)
            core = Core(work / "core")
            try:
                machine_speed(all_results)
                if "startup" not in args.skip:
                    startup(core, work, args.runs, all_results)
                if "cpu" not in args.skip:
                    idle = args.idle
                    runs: list[Figure] = []
                    for _ in range(args.repeat):  # devices interleaved: the VM's speed drifts
                        for kind in args.devices:
                            measured = cpu(core, audio, work, idle, args.call, DEVICES[kind])
                            runs += measured.figures
                            idle = 0.0  # idle is the same whatever the device: measured once
                    all_results.figures += median_of(runs)
                if "long" not in args.skip:
                    for kind in args.devices:
                        long = asyncio.run(
                            long_call(core, audio, work, args.long_call, DEVICES[kind])
                        )
                        all_results.figures += long.figures
                if "sdk" not in args.skip:
                    alone = asyncio.run(engine_only(core, audio, args.long_call))
                    all_results.figures += alone.figures
            finally:
                core.stop()
    finally:
        audio.stop()
    print(f"\n{load()}")
    width = max([46, *(len(f.name) for f in all_results.figures)])
    print(f"{'figure':{width}} {'value':>10} {'':4} {'target':>8}  verdict")
    for f in all_results.figures:
        shown = "-" if f.target is None else f"<= {f.target:g}"
        print(f"{f.name:{width}} {f.value:10.3f} {f.unit:4} {shown:>8}  {f.verdict()}")


if __name__ == "__main__":
    main()
