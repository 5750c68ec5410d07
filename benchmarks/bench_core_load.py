"""Load on one audin-core process: simultaneous echo calls, token issuance, presence rate.

Run: .venv/bin/python benchmarks/bench_core_load.py [--calls 500] [--step 100] [--hold 10]

Starts ``audin-core --sandbox`` as its own process on a free loopback port and drives it
from this one (the load client, protocol v1 over raw WebSockets: no SDK, no audio devices,
so the client's cost per stream stays small):

(a) Token issuance: ``--tokens`` sandbox tokens, ``--concurrency`` requests in flight;
    tokens per second.
(b) Presence connections: that many operators open presence (``hello`` -> ``welcome``);
    connections per second.
(c) Echo calls: calls are added ``--step`` at a time up to ``--calls``; each streams one
    168-byte frame every 20 ms to the echo line, which sends it straight back. At every
    step the load is held ``--hold`` seconds and the round trip of every frame is measured
    (client send -> core -> echo far end -> core -> client receive; the core's forwarding
    delay is at most this). Target (issue 5): >= 500 simultaneous streams with p99 round
    trip < 20 ms and no frame lost. The step at which the target first fails is reported
    with what failed.

Both processes' CPU time is read from /proc. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from softphone.protocol import (  # noqa: E402
    CallAnswered,
    CallCreated,
    Channel,
    Dial,
    Hello,
    MediaReady,
    Welcome,
    decode_message,
    encode_message,
)

ECHO = "+15550100"
P99_TARGET_MS = 20.0
STREAMS_TARGET = 500
FRAME_S = 0.020
STAMP = struct.Struct("!IIq")  # stream, counter, send time (ns)


def cpu_seconds(pid: int) -> float:
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class RawMedia(asyncio.Protocol):
    """A minimal WebSocket client for one media leg (RFC 6455 framing by hand, no per-frame
    coroutine): the load client must cost far less per frame than the core it measures."""

    def __init__(self, index: int, host: str, path: str, token: str) -> None:
        self.index = index
        key = base64.b64encode(os.urandom(16)).decode()
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.texts: asyncio.Queue[str] = asyncio.Queue()
        self.sent = 0
        self.received = 0
        self.malformed = 0
        self.delays_ms: list[float] = []
        self.sent_mark = 0
        self.received_mark = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"media leg {self.index} lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[:end]).split(b"\r\n", 1)[0]
            del self._buffer[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self._upgraded = True
            self.opened.set_result(None)
        buf = self._buffer
        while len(buf) >= 2:
            opcode, size, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    return
                size, start = int.from_bytes(buf[2:4]), 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size, start = int.from_bytes(buf[2:10]), 10
            if len(buf) < start + size:
                return
            payload = bytes(buf[start : start + size])
            del buf[: start + size]
            if opcode == 0x2:
                self._on_frame(payload)
            elif opcode == 0x1:
                self.texts.put_nowait(payload.decode())

    def _on_frame(self, raw: bytes) -> None:
        now = time.perf_counter_ns()
        if len(raw) != 168:
            self.malformed += 1
            return
        index, _counter, sent_ns = STAMP.unpack_from(raw, 8)
        if index != self.index:
            self.malformed += 1
            return
        self.received += 1
        self.delays_ms.append((now - sent_ns) / 1e6)

    def send_text(self, text: str) -> None:
        self._send(0x81, text.encode())

    def send_frame(self, header: bytes, filler: bytes) -> None:
        self.sent += 1
        stamp = STAMP.pack(self.index, self.sent, time.perf_counter_ns())
        # FIN + binary, masked, 16-bit length 168, mask key 0 (XOR with it is the identity).
        assert self.transport is not None
        self.transport.write(b"\x82\xfe\x00\xa8\x00\x00\x00\x00" + header + stamp + filler)

    def _send(self, first: int, data: bytes) -> None:
        assert self.transport is not None
        if len(data) < 126:
            head = bytes((first, 0x80 | len(data)))
        else:
            head = bytes((first, 0x80 | 126)) + len(data).to_bytes(2)
        self.transport.write(head + b"\x00\x00\x00\x00" + data)


@dataclass
class Stream:
    index: int
    presence: ClientConnection
    media: RawMedia


async def issue_tokens(
    client: httpx.AsyncClient, url: str, count: int, concurrency: int
) -> list[str]:
    tokens = [""] * count  # tokens[i] is operator load-i's
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            response = await client.post(
                url + "/sandbox/token", json={"operatorRef": f"load-{i}", "ttlSeconds": 3600}
            )
            response.raise_for_status()
            tokens[i] = response.json()["token"]

    await asyncio.gather(*(one(i) for i in range(count)))
    return tokens


async def open_presence(url: str, token: str) -> ClientConnection:
    ws = await websockets.connect(
        url.replace("http://", "ws://") + "/v1/presence",
        additional_headers={"Authorization": f"Bearer {token}"},
        ping_interval=None,
        max_size=2**20,
        compression=None,
    )
    await ws.send(encode_message(Hello(protocol=1, client="bench", heartbeat_interval=60.0)))
    first = decode_message(await ws.recv(), channel=Channel.PRESENCE, sender="core")
    assert isinstance(first, Welcome), first
    return ws


async def start_call(url: str, index: int, token: str, presence: ClientConnection) -> Stream:
    await presence.send(encode_message(Dial(id=f"d{index}", to=ECHO)))
    sid = ""
    while not sid:
        message = decode_message(await presence.recv(), channel=Channel.PRESENCE, sender="core")
        if isinstance(message, CallCreated):
            sid = message.call_sid
    host = url.split("://", 1)[1]
    hostname, port = host.rsplit(":", 1)
    _, media = await asyncio.get_running_loop().create_connection(
        lambda: RawMedia(index, host, f"/v1/calls/{sid}/media", token), hostname, int(port)
    )
    await media.opened
    media.send_text(encode_message(Hello(protocol=1, client="bench", heartbeat_interval=60.0)))
    ready = decode_message(await media.texts.get(), channel=Channel.MEDIA, sender="core")
    assert isinstance(ready, MediaReady), ready
    while True:  # the echo line rings, then answers
        message = decode_message(await presence.recv(), channel=Channel.PRESENCE, sender="core")
        if isinstance(message, CallAnswered):
            break
    return Stream(index, presence, media)


async def pump(streams: list[Stream], stop: asyncio.Event) -> None:
    """One 168-byte frame per stream every 20 ms. Streams are spread over twenty 1 ms
    slots of the 20 ms cycle (as independent callers are), so that the client neither sends
    every stream's frame in one burst (and measures its own queue) nor walks every stream
    every millisecond (and spends its CPU doing so)."""
    loop = asyncio.get_running_loop()
    filler = bytes(160 - STAMP.size)
    slots = 20
    tick = FRAME_S / slots
    next_at = loop.time()
    n = 0
    while not stop.is_set():
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        if next_at < loop.time() - 0.1:  # far behind (the machine stalled): resync
            next_at = loop.time()
        slot = n % slots
        n += 1
        for stream in streams[slot::slots]:
            media = stream.media
            k = media.sent + 1
            header = struct.pack("!BBHI", 0x01, 0x00, k & 0xFFFF, (k * 160) & 0xFFFFFFFF)
            media.send_frame(header, filler)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_core(extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    data_dir = Path(tempfile.mkdtemp(prefix="audin-load-"))
    core = subprocess.Popen(
        [
            sys.executable, "-m", "softphone.server.cli", "--sandbox", "--port", "0",
            "--data-dir", str(data_dir), "--json", "--log-level", "warning",
            "--token-rate", "100000", "--token-burst", "100000", *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert core.stdout is not None
    return core, json.loads(core.stdout.readline())["coreUrl"]


async def load(args: argparse.Namespace, url: str, core_pid: int) -> int:
    me = os.getpid()
    print(f"core pid {core_pid} at {url}; load client pid {me}")
    async with httpx.AsyncClient(timeout=30.0) as client:
        started = time.perf_counter()
        tokens = await issue_tokens(client, url, args.tokens, args.concurrency)
        took = time.perf_counter() - started
        print(f"(a) tokens: {len(tokens)} in {took:.2f} s = {len(tokens) / took:.0f}/s")
        media_tokens = await issue_tokens(client, url, args.calls, args.concurrency)

    started = time.perf_counter()
    gate = asyncio.Semaphore(args.concurrency)

    async def presence(token: str) -> ClientConnection:
        async with gate:
            return await open_presence(url, token)

    operators = await asyncio.gather(*(presence(t) for t in tokens[: args.calls]))
    took = time.perf_counter() - started
    print(f"(b) presence: {len(operators)} connections in {took:.2f} s"
          f" = {len(operators) / took:.0f}/s")  # fmt: skip

    print("(c) echo calls: streams, round trip p50 / p99 / max (ms), lost, CPU core / client")
    streams: list[Stream] = []
    stop = asyncio.Event()
    pumper = asyncio.get_running_loop().create_task(pump(streams, stop))
    best = 0
    verdict = ""
    for target in range(args.step, args.calls + 1, args.step):
        new = await asyncio.gather(
            *(
                start_call(url, i, media_tokens[i], operators[i])
                for i in range(len(streams), target)
            )
        )
        streams.extend(new)
        await asyncio.sleep(1.0)  # settle: calls just answered
        for s in streams:
            s.media.delays_ms.clear()
            s.media.sent_mark, s.media.received_mark = s.media.sent, s.media.received
        cpu_core, cpu_me, wall = cpu_seconds(core_pid), cpu_seconds(me), time.perf_counter()
        await asyncio.sleep(args.hold)
        wall = time.perf_counter() - wall
        core_pct = (cpu_seconds(core_pid) - cpu_core) / wall * 100
        me_pct = (cpu_seconds(me) - cpu_me) / wall * 100
        delays = [d for s in streams for d in s.media.delays_ms]
        sent = sum(s.media.sent - s.media.sent_mark for s in streams)
        received = sum(s.media.received - s.media.received_mark for s in streams)
        in_flight = len(streams) * max(1, round(percentile(delays, 0.99) / 20) + 1)
        lost = max(0, sent - received - in_flight)
        p50, p99, worst = percentile(delays, 0.5), percentile(delays, 0.99), max(delays)
        print(f"    {len(streams):5d}  {p50:6.2f} / {p99:6.2f} / {worst:7.2f}  lost {lost:5d}"
              f"  CPU {core_pct:4.0f}% / {me_pct:4.0f}%")  # fmt: skip
        if p99 < P99_TARGET_MS and lost == 0:
            best = len(streams)
        elif not verdict:
            verdict = f"first failing step {len(streams)}: p99 {p99:.1f} ms, lost {lost}"
            if not args.past_failure:
                break
    stop.set()
    await pumper
    print(
        f"held: {best} simultaneous streams with p99 < {P99_TARGET_MS:.0f} ms and no loss"
        f" (target >= {STREAMS_TARGET}: {best / STREAMS_TARGET:.2f}x)"
        + (f"; {verdict}" if verdict else "")
    )
    for s in streams:
        if s.media.transport is not None:
            s.media.transport.close()
    for ws in operators:
        await ws.close()
    return 0


def main(args: argparse.Namespace) -> int:
    if args.core_url:  # an already running sandbox core (e.g. under a profiler)
        return asyncio.run(load(args, args.core_url, args.core_pid))
    core, url = start_core(args.core_args)
    try:
        return asyncio.run(load(args, url, core.pid))
    finally:
        core.terminate()
        core.wait(timeout=20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--past-failure", action="store_true", help="keep adding after a miss")
    parser.add_argument("--core-url", help="use this running sandbox core instead")
    parser.add_argument("--core-pid", type=int, default=0, help="its pid (for CPU figures)")
    parser.add_argument("core_args", nargs="*", help="extra audin-core arguments (after --)")
    sys.exit(main(parser.parse_args()))
