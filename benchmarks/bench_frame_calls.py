"""Function calls per 20 ms frame in a call: a CPU measure that does not drift with the VM.

Run: .venv/bin/python benchmarks/bench_frame_calls.py [--seconds 5] [--top 15]

On the development VM the in-call CPU figure moves by 15-20 % from one half hour to the
next, and what it mostly measures is code running from cold caches after each wake-up: one
numpy call costs 40-80 µs there against 1-8 µs in a tight loop (docs/performance.md). The
number of calls made per frame does not move, so this benchmark counts them.

An echo call through the SDK (``audin-core --sandbox`` in its own process, the virtual
sound system of tests/audio_env.py, the sound server's device ``pulse`` opened at 8 kHz by
the default rate policy, default processing on). After the call has run 2 s, Python's
profiler hook counts, for ``--seconds``:

* on the event loop's thread (engine: receive, decode, jitter buffer, echo canceller's
  reference, capture, processing, encode, send; no console);
* in the microphone and speaker callbacks (PortAudio's threads; the hook is set around
  each callback);

the Python functions entered and the C functions called (numpy's among them), per frame
sent or per callback. ``--rate native`` opens the device at its own 44.1 kHz instead
(resampling in the callbacks); ``--no-processing`` switches AEC, NS and AGC off.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.audio_env import VirtualAudio, bandlimited_noise  # noqa: E402
from tests.conftest import start_core_process  # noqa: E402

ECHO = "+15550100"
START_S = 2.0


class Counter:
    """A ``sys.setprofile`` hook: Python calls, C calls, and C calls by name. numpy's ufuncs
    (``np.minimum``, ``np.matmul``...) are not C functions to the profiler: the wrappers of
    :func:`count_ufuncs` report them here, and are not counted as Python calls."""

    def __init__(self) -> None:
        self.python = 0
        self.c_calls = 0
        self.numpy = 0
        self.by_name: collections.Counter[str] = collections.Counter()
        # One counter per thread: no lock (the hook would see, and count, its own lock).

    def ufunc(self, name: str) -> None:
        self.c_calls += 1
        self.numpy += 1
        self.by_name[f"numpy.{name}"] += 1

    def hook(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if frame.f_code in _OWN_CODE:  # the counting itself
            return
        if event == "call":
            self.python += 1
        elif event == "c_call":
            name = _c_name(arg)
            self.c_calls += 1
            self.by_name[name] += 1
            if name.startswith("numpy"):
                self.numpy += 1


def _c_name(func: Any) -> str:
    owner = getattr(func, "__self__", None)
    module = getattr(func, "__module__", None)
    if module is None and owner is not None:
        module = type(owner).__module__
    qualname = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
    if owner is not None and not isinstance(owner, types.ModuleType):
        kind = type(owner)
        if kind.__module__.startswith("numpy"):
            module = "numpy"
        qualname = f"{kind.__name__}.{getattr(func, '__name__', qualname)}"
    return f"{module or '?'}.{qualname}"


_local = threading.local()


class _CountedUfunc:
    """Stands in for a ufunc in the numpy namespace: counts calls, forwards everything else
    (``np.add.reduce``, ``np.maximum.at``...)."""

    def __init__(self, name: str, ufunc: Any) -> None:
        self._name = name
        self._ufunc = ufunc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        counter = getattr(_local, "counter", None)
        if counter is not None:
            counter.ufunc(self._name)
        return self._ufunc(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._ufunc, attr)


_OWN_CODE = frozenset({_CountedUfunc.__call__.__code__, Counter.ufunc.__code__})


def count_ufuncs() -> Callable[[], None]:
    """Replace numpy's ufuncs in the numpy namespace by counting wrappers; returns an undo.
    (Code that took a ufunc before, or calls a method such as ``ndarray.max``, is not
    affected: methods are C functions the profiler sees anyway.)"""
    import numpy as np

    saved = {n: u for n in dir(np) if isinstance(u := getattr(np, n), np.ufunc)}
    for name, ufunc in saved.items():
        setattr(np, name, _CountedUfunc(name, ufunc))

    def undo() -> None:
        for name, ufunc in saved.items():
            setattr(np, name, ufunc)

    return undo


def profile(counter: Counter | None) -> None:
    """Count calls of this thread into ``counter`` (None: stop)."""
    _local.counter = counter
    sys.setprofile(None if counter is None else counter.hook)


def wrap_callback(cls: Any, counter: Counter, counts: list[int]) -> Callable[[], None]:
    """Count inside every call of ``cls.callback`` (PortAudio's thread); returns an undo."""
    original = cls.callback

    def counted(self: Any, *args: Any) -> Any:
        if not counts[1]:
            return original(self, *args)
        profile(counter)
        try:
            return original(self, *args)
        finally:
            profile(None)
            counts[0] += 1

    cls.callback = counted

    def undo() -> None:
        cls.callback = original

    return undo


async def measure(args: argparse.Namespace, env_audio: VirtualAudio, core_url: str) -> None:
    from softphone.engine import Operator, token_url_provider
    from softphone.engine.audio import AudioManager, AudioSettings
    from softphone.media import pyaudio_device
    from softphone.media.pyaudio_device import PyAudioDevice

    rate = 8000 if args.rate == "auto" else 44100
    env_audio.write_input(
        VirtualAudio.MIC, bandlimited_noise(args.seconds + 10, rate, seed=9), rate=rate
    )
    device = VirtualAudio.SERVER
    processing = not args.no_processing
    settings = AudioSettings(
        input=device,
        output=device,
        rate=args.rate,
        echo_cancellation=processing,
        noise_suppression=processing,
        auto_gain=processing,
    )
    loop_counter, in_counter, out_counter = Counter(), Counter(), Counter()
    in_counts, out_counts = [0, 0], [0, 0]  # [callbacks counted, counting on]
    undo_in = wrap_callback(pyaudio_device._InputPath, in_counter, in_counts)
    undo_out = wrap_callback(pyaudio_device._OutputPath, out_counter, out_counts)
    operator = Operator(
        core_url,
        token_url_provider(core_url + "/sandbox/token"),
        audio=AudioManager(backend="pyaudio", settings=settings),
    )
    try:
        call = await operator.dial(ECHO)
        if not await call.wait_started(20):
            raise RuntimeError("the echo call did not start")
        await asyncio.sleep(START_S)
        active = operator.audio.active_device
        assert isinstance(active, PyAudioDevice), "the call is not on the sound card"
        sent0 = call.stats.frames_sent
        undo_ufuncs = count_ufuncs()
        in_counts[1] = out_counts[1] = 1
        profile(loop_counter)
        try:
            await asyncio.sleep(args.seconds)
        finally:
            profile(None)
            in_counts[1] = out_counts[1] = 0
            undo_ufuncs()
        frames = call.stats.frames_sent - sent0
        rates = (active.input_rate, active.output_rate)
        await call.hangup()
    finally:
        undo_in()
        undo_out()
        await operator.close(force=True)

    print(
        f"echo call on {device!r} at {rates[0]}/{rates[1]} Hz, processing "
        f"{'on' if processing else 'off'}: {frames} frames sent in {args.seconds:g} s, "
        f"{in_counts[0]} microphone and {out_counts[0]} speaker callbacks counted"
    )
    print(f"{'per unit':44} {'Python calls':>13} {'C calls':>9} {'numpy':>7}")
    for label, counter, units in (
        ("event loop, per frame sent", loop_counter, frames),
        ("microphone callback, per callback", in_counter, in_counts[0]),
        ("speaker callback, per callback", out_counter, out_counts[0]),
    ):
        if not units:
            continue
        print(
            f"{label:44} {counter.python / units:13.1f} {counter.c_calls / units:9.1f} "
            f"{counter.numpy / units:7.1f}"
        )
    print(f"\nmost frequent C calls on the event loop, per frame (top {args.top}):")
    for name, count in loop_counter.by_name.most_common(args.top):
        print(f"  {count / max(frames, 1):7.2f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--rate", choices=["auto", "native"], default="auto")
    parser.add_argument("--no-processing", action="store_true")
    args = parser.parse_args()
    env_audio = VirtualAudio.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp:
            process, info = start_core_process(Path(tmp))
            try:
                asyncio.run(measure(args, env_audio, info["coreUrl"]))
            finally:
                process.terminate()
                process.wait(timeout=10)
    finally:
        env_audio.stop()


if __name__ == "__main__":
    main()
