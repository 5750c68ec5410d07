"""A line-oriented operator console on the audin SDK: the whole API in one small script.

    python examples/operator_console.py --sandbox --dial +15550100 --dtmf 12# --seconds 3
    python examples/operator_console.py --sandbox --answer --seconds 30   # waits for callers
    python examples/operator_console.py --core-url https://core.example \\
        --token-url https://backend.example/api/operator/token --answer

It lists the account's numbers, goes online on the first one (or --number), prints every
operator and call event, dials --dial (with --dtmf digits and a --message once answered) or
answers inbound calls with --answer, hangs up after --seconds, rates the call and exits.
--sandbox starts a private reference core (no account, no network) for the run.
Audio is silent unless --sound is given (then the default microphone and speaker are used).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from softphone import Call, Operator, OperatorError, token_url_provider


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def watch_call(call: Call) -> None:
    """Print every event of a call."""
    call.on("ringing", lambda early: say(f"  ringing (early media: {early})"))
    call.on("accepted", lambda: say(f"  accepted, codec {call.codec}"))
    call.on("muted", lambda muted: say(f"  muted: {muted}"))
    call.on("message_received", lambda body, kind: say(f"  message received [{kind}]: {body}"))
    call.on("message_sent", lambda body, kind: say(f"  message sent [{kind}]: {body}"))
    call.on(
        "sample",
        lambda s: say(
            f"  sample {s.at:4.1f}s: MOS {s.mos:.2f}, jitter {s.jitter_ms:.1f} ms,"
            f" rtt {s.rtt_ms or 0:.1f} ms, lost {s.frames_lost}"
        ),
    )
    call.on("warning", lambda name: say(f"  warning: {name}"))
    call.on("warning_cleared", lambda name: say(f"  warning cleared: {name}"))
    call.on("reconnecting", lambda: say("  media reconnecting"))
    call.on("reconnected", lambda: say("  media reconnected"))
    call.on("error", lambda e: say(f"  call error {e.code}: {e.message}"))
    call.on("disconnected", lambda: say(f"  disconnected: {call.end_reason}"))


@contextlib.asynccontextmanager
async def sandbox_core() -> AsyncIterator[str]:
    """A private reference core on a free loopback port, for the length of the run."""
    from softphone.server import CoreConfig, CoreServer

    with tempfile.TemporaryDirectory(prefix="audin-example-") as tmp:
        server = CoreServer(CoreConfig(data_dir=Path(tmp), port=0, sandbox=True))
        await server.start()
        try:
            yield server.url
        finally:
            await server.stop()


async def run(args: argparse.Namespace, core_url: str, token_url: str) -> int:
    op = Operator(
        core_url,
        token_url_provider(token_url, body={"operatorRef": args.operator}),
        audio="pyaudio" if args.sound else "null",
    )
    op.on("presence_state_changed", lambda state: say(f"presence: {state}"))
    op.on("availability_changed", lambda a: say(f"online on {list(a.accepted)}"))
    op.on("token_will_expire", lambda left: say(f"token expires in {left:.0f} s: renewing"))
    op.on("error", lambda e: say(f"error {e.code}: {e.message}"))
    op.on("call_started", lambda call: say(f"call started: {call.call_sid}"))
    op.on("call_ended", lambda call: say(f"call ended: {call.end_reason} {call.end_message}"))
    answered: asyncio.Queue[Call] = asyncio.Queue()

    async def on_incoming(call: Call) -> None:
        say(f"incoming call from {call.from_} to {call.to}")
        watch_call(call)
        if args.answer:
            await call.accept()
            await answered.put(call)

    op.on("incoming_call", on_incoming)
    async with op:
        numbers = await op.list_phone_numbers()
        for n in numbers:
            say(f"number {n.id}: {n.phone_number} ({n.display_name})")
        mine = next((n for n in numbers if args.number in (n.id, n.phone_number)), None)
        if mine is None:
            mine = numbers[0] if numbers and not args.number else None
        if mine is None:
            say(f"no such number: {args.number}")
            return 2
        await op.go_online([mine.id])
        say(f"identity {op.identity}, home {op.home}")
        if args.dial:
            call = await op.dial(args.dial, caller_id=mine.phone_number)
            watch_call(call)
            if not await call.wait_started(30):
                say(f"not answered: {call.end_reason}")
                return 1
        else:
            try:
                call = await asyncio.wait_for(answered.get(), args.seconds)
            except TimeoutError:
                say("nobody called")
                return 0
        if args.dtmf:
            await call.send_dtmf(args.dtmf)
        if args.message:
            await call.send_message(args.message)
        await call.wait_ended(args.seconds)
        await call.hangup()
        with contextlib.suppress(OperatorError):
            await call.post_feedback(5)
            say("feedback sent")
    return 0


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sandbox", action="store_true", help="start a private reference core")
    where.add_argument("--core-url", help="the core's base URL")
    parser.add_argument("--token-url", help="your backend's token endpoint (with --core-url)")
    parser.add_argument("--operator", default="example-operator", help="operator ref")
    parser.add_argument("--number", default="", help="number id or E.164 to go online on")
    parser.add_argument("--dial", help="E.164 number to call")
    parser.add_argument("--answer", action="store_true", help="accept inbound calls")
    parser.add_argument("--dtmf", help="DTMF to send once the call is up, e.g. 12#w34")
    parser.add_argument("--message", help="a message to send once the call is up")
    parser.add_argument("--seconds", type=float, default=5.0, help="call length (or wait)")
    parser.add_argument("--sound", action="store_true", help="use the sound card")
    args = parser.parse_args(argv)
    try:
        if args.sandbox:
            async with sandbox_core() as url:
                return await run(args, url, url + "/sandbox/token")
        if not args.token_url:
            parser.error("--core-url needs --token-url")
        return await run(args, args.core_url, args.token_url)
    except OperatorError as exc:
        say(f"failed: {exc.code}: {exc.message}")
        return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
