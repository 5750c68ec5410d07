"""Soak test: calls through the fault proxy for a long time, with random faults.

Run: .venv/bin/python benchmarks/soak_faults.py [--minutes 30] [--operators 4] [--seed 1]

A real in-process core, ``--operators`` SDK operators connected through the TCP proxy of
tests/faultproxy.py: the first answers the inbound calls the core places every 5-20 s, the
others place echo calls of random length (3-20 s) back to back. Every 10-40 s a random fault hits
the proxy: a cut, a 1-3 s stall, a blackhole that heartbeats must detect (heartbeat 2 s),
0.5-2 s of refusals, or 5 s of 100 ms latency. Not part of CI (it runs for minutes).

At the end it prints calls placed, completed (hung up by the operator as planned),
recovered (the media leg dropped and came back within the call), failed (ended `failed`),
and lost (a call ended by something nobody asked for, or hung up by the operator and still
live on the core 30 s later: an orphan), ended late (the core needed its own timers),
plus presence reconnections and the error codes seen. The goal: nothing lost.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from softphone import (  # noqa: E402
    Call,
    CallState,
    EndReason,
    Operator,
    OperatorError,
    PresenceState,
    token_url_provider,
)
from softphone.server import CoreConfig, CoreServer  # noqa: E402
from softphone.server.core import CoreTimings  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402

ECHO = "+15550100"
NUMBERS = ("pn_15550150", "pn_15550151")
E164 = {"pn_15550150": "+15550150", "pn_15550151": "+15550151"}


@dataclass
class Tally:
    placed: int = 0
    completed: int = 0
    recovered: int = 0
    failed: int = 0
    refused: int = 0
    inbound_answered: int = 0
    lost: int = 0
    ended_late: int = 0
    lost_how: collections.Counter[str] = field(default_factory=collections.Counter)
    reconnections: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)


async def run_operator(
    index: int, proxy: FaultProxy, core: CoreServer, tally: Tally, stop: asyncio.Event
) -> None:
    rng = random.Random(index)
    op = Operator(
        proxy.url,
        token_url_provider(proxy.url + "/sandbox/token", body={"operatorRef": f"soak-{index}"}),
        audio="null",
        heartbeat_interval=2.0,
        reconnect_backoff=(0.5, 1.0, 2.0),
        request_timeout=5.0,
    )
    op.on("error", lambda e: tally.errors.update([e.code]))
    op.on(
        "presence_state_changed",
        lambda s: (
            tally.__setattr__("reconnections", tally.reconnections + 1)
            if s == PresenceState.RECONNECTING
            else None
        ),
    )

    async def answer(call: Call) -> None:
        try:
            await call.accept()
            if await call.wait_started(10):
                tally.inbound_answered += 1
                await asyncio.sleep(rng.uniform(2, 6))
                await call.hangup()
        except OperatorError:
            pass

    op.on("incoming_call", answer)
    number = NUMBERS[index % 2]
    try:
        if index == 0:  # the answering operator: online, takes the inbound calls
            while not stop.is_set():
                if op.state == PresenceState.OFFLINE:  # never online yet, or refused
                    try:
                        await op.go_online(list(NUMBERS))
                    except OperatorError:
                        tally.refused += 1
                await asyncio.sleep(1.0)
            return
        while not stop.is_set():
            try:
                await op.go_online([number])
                call = await op.dial(ECHO, caller_id=E164[number])
            except OperatorError:
                tally.refused += 1
                await asyncio.sleep(1.0)
                continue
            tally.placed += 1
            dropped: list[int] = []
            call.on("reconnecting", lambda d=dropped: d.append(1))
            if not await call.wait_started(15):
                tally.failed += 1
                continue
            ended = await call.wait_ended(rng.uniform(3, 20))
            if ended is None:
                sid = call.call_sid
                await call.hangup()
                if call.end_reason in (EndReason.HANGUP, EndReason.OFFLINE):
                    tally.completed += 1
                    if dropped:
                        tally.recovered += 1
                else:
                    tally.failed += 1
                if sid in core.core.calls:  # the core must end it too
                    started = time.monotonic()
                    while sid in core.core.calls and time.monotonic() - started < 30:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                    if sid in core.core.calls:  # an orphan: nobody will ever end it
                        tally.lost += 1
                        tally.lost_how["hung up here, still live on the core after 30 s"] += 1
                    elif time.monotonic() - started > 1.0:
                        tally.ended_late += 1
            elif ended == EndReason.FAILED:
                tally.failed += 1
            else:
                tally.lost += 1  # ended by something nobody asked for
                tally.lost_how[f"ended {ended}: {call.end_message}"] += 1
            assert call.state == CallState.ENDED
    finally:
        await op.close(force=True)


async def inject_faults(proxy: FaultProxy, tally: Tally, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(10, 40))
            return
        except TimeoutError:
            pass
        fault = rng.choice(["cut", "stall", "blackhole", "refuse", "latency"])
        tally.faults[fault] += 1
        if fault == "cut":
            proxy.cut()
        elif fault == "stall":
            proxy.stall(rng.uniform(1, 3))
        elif fault == "blackhole":
            proxy.blackhole()  # heartbeats (2 s) detect it; new connections pass
        elif fault == "refuse":
            proxy.refuse = True
            proxy.cut()
            await asyncio.sleep(rng.uniform(0.5, 2))
            proxy.refuse = False
        else:
            proxy.delay = 0.1
            await asyncio.sleep(5)
            proxy.delay = 0.0


async def place_inbound(core: CoreServer, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed + 1)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(5, 20))
            return
        except TimeoutError:
            pass
        await core.core.place_inbound(
            f"+1555{rng.randrange(10**6, 10**7)}", rng.choice(list(E164.values())), {}
        )


async def main(args: argparse.Namespace) -> int:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="audin-soak-") as tmp:
        core = CoreServer(
            CoreConfig(
                data_dir=Path(tmp),
                port=0,
                sandbox=True,
                timings=CoreTimings(echo_ring=0.5),
                token_rate=1000.0,
                token_burst=1000,
            )
        )
        await core.start()
        proxy = await FaultProxy(core.port).start()
        stop = asyncio.Event()
        started = time.monotonic()
        tasks = [
            asyncio.create_task(run_operator(i, proxy, core, tally, stop))
            for i in range(args.operators)
        ]
        tasks.append(asyncio.create_task(inject_faults(proxy, tally, stop, args.seed)))
        tasks.append(asyncio.create_task(place_inbound(core, stop, args.seed)))
        try:
            await asyncio.sleep(args.minutes * 60)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await proxy.close()
            await core.stop()
    minutes = (time.monotonic() - started) / 60
    print(f"soak: {minutes:.1f} min, {args.operators} operators")
    print(f"  faults injected      {dict(tally.faults)}")
    print(f"  outbound calls       placed {tally.placed}, completed {tally.completed}")
    print(f"  recovered mid-call   {tally.recovered} (media leg dropped and came back)")
    print(f"  failed               {tally.failed} (ended `failed`, e.g. a fault at set-up)")
    print(f"  refused / retried    {tally.refused} (dial or go_online during a fault)")
    print(f"  inbound answered     {tally.inbound_answered}")
    print(f"  presence reconnects  {tally.reconnections}")
    print(
        f"  ended late on core   {tally.ended_late} (hung up while the link was silent: the"
        " core ended it once its own timers noticed)"
    )
    print(f"  lost                 {tally.lost} (goal: 0) {dict(tally.lost_how)}")
    print(f"  error codes          {dict(tally.errors)}")
    return 0 if tally.lost == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--operators", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(asyncio.run(main(parser.parse_args())))
