"""Recovery figures of the fault scenarios (docs/reliability.md).

Run: .venv/bin/python benchmarks/bench_faults.py [--runs 5]

Each scenario runs ``--runs`` times between the SDK and a real in-process core, with
faults injected by the TCP proxy of tests/faultproxy.py (the same one the CI tests use),
and prints the median and worst recovery time and what was lost. The tests in
tests/test_faults.py and tests/test_resilience.py assert the bounds; this script measures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from softphone import CallState, Operator, PresenceState, token_url_provider  # noqa: E402
from softphone.server import CoreConfig, CoreServer  # noqa: E402
from softphone.server.core import CoreTimings  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402

ECHO = "+15550100"
LINE_A = "+15550150"


@dataclass
class Outcome:
    recovery_s: float
    lost: str


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> float:
    """Seconds until ``condition`` holds (polled every 5 ms)."""
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a measurement loop over plain state)
            await asyncio.sleep(0.005)
    return time.monotonic() - start


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    async def core(self) -> CoreServer:
        self.n += 1
        server = CoreServer(
            CoreConfig(
                data_dir=self.root / f"core{self.n}",
                port=0,
                sandbox=True,
                timings=CoreTimings(echo_ring=0.0),
            )
        )
        await server.start()
        return server

    @staticmethod
    def operator(url: str, token_url: str, ref: str = "op-1", **kw: Any) -> Operator:
        kw.setdefault("audio", "null")
        return Operator(url, token_url_provider(token_url, body={"operatorRef": ref}), **kw)


async def presence_cut(b: Bench) -> Outcome:
    core = await b.core()
    proxy = await FaultProxy(core.port).start()
    op = b.operator(proxy.url, core.url + "/sandbox/token")
    offers: list[Any] = []
    op.on("incoming_call", offers.append)
    try:
        await op.go_online(["pn_15550150"])
        proxy.cut()
        await until(lambda: op.state == PresenceState.RECONNECTING, 5)
        took = await until(lambda: op.state == PresenceState.ONLINE)
        await until(lambda: len(core.core.sessions) == 1)
        await core.core.place_inbound("+15551230001", LINE_A, {})
        await until(lambda: len(offers) >= 1)
        await asyncio.sleep(0.2)  # would a duplicate offer follow?
        return Outcome(took, f"offers delivered {len(offers)} (1 expected)")
    finally:
        await op.close()
        await proxy.close()
        await core.stop()


async def half_open(b: Bench) -> Outcome:
    core = await b.core()
    proxy = await FaultProxy(core.port).start()
    op = b.operator(
        proxy.url, core.url + "/sandbox/token", heartbeat_interval=1.0, reconnect_backoff=[0.1]
    )
    try:
        await op.go_online(["pn_15550150"])
        proxy.half_open()
        detected = await until(lambda: op.state == PresenceState.RECONNECTING, 10)
        back = await until(lambda: op.state == PresenceState.ONLINE)
        return Outcome(detected + back, f"detected after {detected:.2f} s (heartbeat 1 s)")
    finally:
        await op.close()
        await proxy.close()
        await core.stop()


async def media_cut(b: Bench) -> Outcome:
    core = await b.core()
    proxy = await FaultProxy(core.port).start()
    op = b.operator(proxy.url, core.url + "/sandbox/token")
    try:
        await op.go_online(["pn_15550150"])
        call = await op.dial(ECHO)
        await call.wait_started(10)
        await until(lambda: call.stats.frames_received > 25)
        proxy.cut()
        await until(lambda: call.state == CallState.RECONNECTING, 5)
        took = await until(lambda: call.state == CallState.ACTIVE)
        received = call.stats.frames_received
        await until(lambda: call.stats.frames_received >= received + 25)
        await call.hangup()
        gap_frames = round(took / 0.02)
        return Outcome(took, f"~{gap_frames} frames (20 ms) not carried during the re-open")
    finally:
        await op.close()
        await proxy.close()
        await core.stop()


async def graceful_restart(b: Bench) -> Outcome:
    first = await b.core()
    proxy = await FaultProxy(first.port).start()
    op = b.operator(proxy.url, proxy.url + "/sandbox/token", reconnect_backoff=[0.2])
    second: CoreServer | None = None
    try:
        await op.go_online(["pn_15550150"])
        call = await op.dial(ECHO)
        await call.wait_started(10)
        proxy.refuse = True
        stopped = time.monotonic()
        await first.stop()
        await call.wait_ended(5)
        second = CoreServer(first.config)
        await second.start()
        proxy.target = ("127.0.0.1", second.port)
        proxy.refuse = False
        try:
            await until(lambda: op.state == PresenceState.ONLINE, 15)
        except TimeoutError:
            raise RuntimeError(f"not back online: {op.state}, {proxy.refused} refused") from None
        took = time.monotonic() - stopped
        row = second.store.call(call.call_sid)
        consistent = row is not None and row.status == "completed"
        return Outcome(
            took,
            f"the call in progress ends {call.end_reason} ({call.end_message});"
            f" record consistent: {consistent}",
        )
    finally:
        await op.close()
        await proxy.close()
        if second is not None:
            await second.stop()


async def token_expiry_mid_call(b: Bench) -> Outcome:
    core = await b.core()

    async def get_token() -> dict[str, str]:
        async with httpx.AsyncClient() as client:
            r = await client.post(
                core.url + "/sandbox/token", json={"operatorRef": "op-1", "ttlSeconds": 10}
            )
        data: dict[str, str] = r.json()
        return data

    op = Operator(core.url, get_token, audio="null", token_refresh_margin=5.0)
    try:
        await op.go_online(["pn_15550150"])
        call = await op.dial(ECHO)
        await call.wait_started(10)
        reconnects: list[int] = []
        call.on("reconnecting", lambda: reconnects.append(1))
        await until(lambda: call.duration >= 16.0, 30)  # across 3 renewals
        lost = call.stats.frames_sent - call.stats.frames_received
        await call.hangup()
        return Outcome(0.0, f"reconnections {len(reconnects)}, frames in flight/lost {lost}")
    finally:
        await op.close()
        await core.stop()


async def get_token_outage(b: Bench) -> Outcome:
    core = await b.core()
    proxy = await FaultProxy(core.port).start()
    failing = False

    async def get_token() -> dict[str, str]:
        if failing:
            raise ConnectionError("backend down")
        async with httpx.AsyncClient() as client:
            r = await client.post(core.url + "/sandbox/token", json={"operatorRef": "op-1"})
        data: dict[str, str] = r.json()
        return data

    op = Operator(proxy.url, get_token, audio="null", reconnect_backoff=[0.5, 1.0])
    errors: list[Any] = []
    op.on("error", errors.append)
    try:
        await op.go_online(["pn_15550150"])
        failing = True
        proxy.cut()
        await asyncio.sleep(3.0)  # the outage being measured
        failing = False
        took = await until(lambda: op.state == PresenceState.ONLINE)
        return Outcome(took, f"{len(errors)} error events during a 3 s outage")
    finally:
        await op.close()
        await proxy.close()
        await core.stop()


async def offer_during_reconnection(b: Bench) -> Outcome:
    core = await b.core()
    proxy = await FaultProxy(core.port).start()
    op = b.operator(proxy.url, core.url + "/sandbox/token", reconnect_backoff=[0.5])
    offers: list[Any] = []
    op.on("incoming_call", offers.append)
    try:
        await op.go_online(["pn_15550150"])
        proxy.refuse = True
        proxy.cut()
        await until(lambda: not core.core.sessions, 5)
        await core.core.place_inbound("+15551230002", LINE_A, {})
        proxy.refuse = False
        took = await until(lambda: bool(offers))
        return Outcome(took, f"offers delivered {len(offers)} (1 expected)")
    finally:
        await op.close()
        await proxy.close()
        await core.stop()


SCENARIOS: dict[str, Callable[[Bench], Awaitable[Outcome]]] = {
    "presence link cut": presence_cut,
    "half-open link": half_open,
    "media leg cut mid-call": media_cut,
    "core restart (graceful)": graceful_restart,
    "token expiry mid-call (10 s tokens)": token_expiry_mid_call,
    "get_token failing for 3 s": get_token_outage,
    "offer during reconnection": offer_during_reconnection,
}


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="audin-faults-") as tmp:
        bench = Bench(Path(tmp))
        print(f"{'scenario':38s} {'recovery median / worst':>24s}  lost")
        for name, scenario in SCENARIOS.items():
            if args.only and args.only not in name:
                continue
            outcomes = [await scenario(bench) for _ in range(args.runs)]
            times = [o.recovery_s for o in outcomes]
            print(
                f"{name:38s} {statistics.median(times):9.3f} s / {max(times):6.3f} s"
                f"  {outcomes[-1].lost}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="", help="run the scenarios whose name has this")
    sys.exit(asyncio.run(main(parser.parse_args())))
