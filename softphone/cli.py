"""``audin-phone``: the operator's commands.

    audin-phone [--sandbox | --core-url URL --token-url URL] [--config FILE] ...
                            the operator console (docs/tui.md)
    audin-phone call NUMBER [--sandbox | --core-url URL --token-url URL] [--play WAV]
                            [--record WAV] [--seconds N] [--json]

Exit status of ``call``: 0 the call connected and ended normally; 1 it never connected or
failed; 2 bad arguments or audio files; 3 the core or the token URL could not be used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shlex
import signal
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from softphone.engine import (
    Call,
    Operator,
    OperatorError,
    token_command_provider,
    token_url_provider,
)
from softphone.engine.audio import AudioManager, AudioSettings
from softphone.media import AudioDeviceError, FileAudioDevice
from softphone.protocol import EndReason, ProtocolError, validate_e164

if TYPE_CHECKING:
    from softphone.tui import PhoneApp, TuiConfig

EXIT_OK = 0
EXIT_CALL_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
_UNREACHABLE_CODES = {
    "CONNECTION_FAILED",
    "CONNECTION_LOST",
    "TOKEN_FETCH_FAILED",
    "TIMEOUT",
    "UNAUTHORIZED",
    "AUTH_REQUIRED",
    "TOKEN_INVALID",
    "TOKEN_EXPIRED",
    "UNSUPPORTED_VERSION",
    "REQUEST_FAILED",
}
_NORMAL_ENDS = {EndReason.HANGUP, EndReason.REMOTE_HANGUP}


class UsageError(Exception):
    pass


class SandboxError(Exception):
    """The embedded sandbox core could not start (no port, no temporary folder...)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audin-phone", description="audin-phone softphone.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser(
        "call",
        help="place one headless call",
        description="Go online, dial NUMBER, stream a WAV, record the far end, hang up, report.",
    )
    c.add_argument("number", help="number to dial, E.164 (e.g. +15550100, the sandbox echo line)")
    where = c.add_mutually_exclusive_group()
    where.add_argument("--sandbox", action="store_true", help="start an embedded core (no account)")
    where.add_argument("--core-url", help="URL of the operator core, e.g. https://core.example")
    c.add_argument("--token-url", help="your backend's token endpoint (POST -> {token, expiresAt})")
    c.add_argument(
        "--token-command",
        help="a local command printing {token, expiresAt} as JSON (instead of --token-url)",
    )
    c.add_argument(
        "--token-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra header for the token request (repeatable)",
    )
    c.add_argument(
        "--ca-file", type=Path, help="PEM file of the CAs that signed the core's certificate"
    )
    c.add_argument(
        "--from", dest="caller_id", help="caller ID: one of your numbers (default: first)"
    )
    c.add_argument("--play", type=Path, help="WAV (16-bit, 8 kHz) to stream as the microphone")
    c.add_argument("--record", type=Path, help="WAV to write with what the far end sends")
    c.add_argument(
        "--audio",
        choices=["none", "device"],
        default="none",
        help="without --play/--record: 'device' talks through the sound card (default: none)",
    )
    c.add_argument("--input", help="microphone for --audio device (index or name)")
    c.add_argument("--output", help="speaker for --audio device (index or name)")
    c.add_argument(
        "--seconds",
        type=float,
        help="hang up after this many seconds of talk (default: --play's length + 1 s, "
        "or when the far end hangs up)",
    )
    c.add_argument("--connect-timeout", type=float, default=30.0, help="give up if not connected")
    c.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    c.add_argument("-v", "--verbose", action="store_true", help="log SDK events to stderr")
    return p


@dataclass
class CallSummary:
    call_sid: str | None
    from_: str | None
    to: str
    connected: bool
    end_reason: str | None
    end_message: str
    talk_seconds: float
    frames_sent: int
    frames_received: int
    playback_underruns: int
    rtt_median_ms: float | None
    record: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "callSid": self.call_sid,
            "from": self.from_,
            "to": self.to,
            "connected": self.connected,
            "endReason": self.end_reason,
            "endMessage": self.end_message,
            "talkSeconds": round(self.talk_seconds, 3),
            "framesSent": self.frames_sent,
            "framesReceived": self.frames_received,
            "playbackUnderruns": self.playback_underruns,
            "rttMedianMs": None if self.rtt_median_ms is None else round(self.rtt_median_ms, 2),
            "record": self.record,
        }


@contextlib.asynccontextmanager
async def _sandbox_core() -> AsyncIterator[str]:
    """An embedded sandbox core on a free loopback port; yields its URL."""
    from softphone.server import CoreConfig, CoreServer

    logging.getLogger("audin.core").setLevel(logging.WARNING)
    try:
        folder = tempfile.TemporaryDirectory(prefix="audin-sandbox-")
    except OSError as exc:
        raise SandboxError(f"cannot start the sandbox core: no temporary folder ({exc})") from exc
    with folder as tmp:
        server = CoreServer(CoreConfig(data_dir=Path(tmp), port=0, sandbox=True))
        try:
            await server.start()
        except OSError as exc:
            with contextlib.suppress(Exception):  # tidy what started; the cause is raised
                await server.stop()
            raise SandboxError(f"cannot start the sandbox core: {exc}") from exc
        try:
            yield server.url
        finally:
            await server.stop()


def _verify(ca_file: Path | None) -> bool | ssl.SSLContext:
    """How the token URL's certificate is checked: the system's CAs, or ``--ca-file``'s
    (a private core's sandbox token URL is signed by the same CA)."""
    if ca_file is None:
        return True
    if not ca_file.is_file():
        raise UsageError(f"--ca-file {ca_file}: no such file")
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--ca-file {ca_file}: not a PEM file of certificates ({exc})") from None


@contextlib.asynccontextmanager
async def _core(args: argparse.Namespace) -> AsyncIterator[tuple[str, str, dict[str, str]]]:
    """Yield (core URL, token URL, token headers): an embedded sandbox core or the given one."""
    headers = _headers(args.token_header)
    if args.sandbox:
        async with _sandbox_core() as url:
            yield url, url + "/sandbox/token", headers
        return
    if not args.core_url or not (args.token_url or args.token_command):
        raise UsageError("give --sandbox, or --core-url with --token-url or --token-command")
    if args.token_url and args.token_command:
        raise UsageError("give --token-url or --token-command, not both")
    yield args.core_url, args.token_url or "", headers


def _headers(items: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--token-header {item!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _audio(args: argparse.Namespace) -> tuple[AudioManager, FileAudioDevice | None]:
    """The call's audio: WAV files, the sound card, or nothing (silence)."""
    if args.play is not None or args.record is not None:
        device = FileAudioDevice(args.play, args.record)
        return AudioManager(device_factory=lambda _call: device), device
    if args.audio == "device":
        settings = AudioSettings(input=_spec(args.input), output=_spec(args.output))
        return AudioManager(backend="pyaudio", settings=settings), None
    return AudioManager(backend="null"), None


def _spec(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


async def run_call(args: argparse.Namespace) -> tuple[int, CallSummary]:
    try:
        validate_e164(args.number)
        if args.caller_id:
            validate_e164(args.caller_id)
    except ProtocolError as exc:
        raise UsageError(exc.message) from None
    audio, device = _audio(args)  # validates the WAV files before anything goes on the wire
    summary = CallSummary(None, None, args.number, False, None, "", 0.0, 0, 0, 0, None, None)
    async with _core(args) as (core_url, token_url, headers):
        get_token = (
            token_command_provider(shlex.split(args.token_command))
            if args.token_command and not args.sandbox
            else token_url_provider(token_url, headers=headers, verify=_verify(args.ca_file))
        )
        operator = Operator(core_url, get_token, audio=audio, ca_file=args.ca_file)
        if args.verbose:
            for name in ("presence_state_changed", "availability_changed", "call_started"):
                operator.on(name, lambda v, n=name: print(f"event {n}: {v}", file=sys.stderr))
            operator.on(
                "error", lambda e: print(f"warning: {e.code}: {e.message}", file=sys.stderr)
            )
        try:
            numbers = await operator.list_phone_numbers()
            if not numbers:
                raise OperatorError("CALLER_ID_NOT_ALLOWED", "your token allows no phone number")
            mine = next((n for n in numbers if n.phone_number == args.caller_id), None)
            if args.caller_id and mine is None:
                raise OperatorError(
                    "CALLER_ID_NOT_ALLOWED",
                    f"{args.caller_id} is not one of your numbers: "
                    + ", ".join(n.phone_number for n in numbers),
                )
            mine = mine or numbers[0]
            await operator.go_online([mine.id])
            call = await operator.dial(args.number, caller_id=mine.phone_number)
            summary.call_sid, summary.from_ = call.call_sid, call.from_
            connected = await call.wait_started(args.connect_timeout)
            if connected:
                summary.connected = True
                await _talk(call, args, device)
            await call.hangup()
            _fill(summary, call, args)
        finally:
            await operator.close()
    code = EXIT_OK if summary.connected and summary.end_reason in _NORMAL_ENDS else EXIT_CALL_FAILED
    return code, summary


async def _talk(call: Call, args: argparse.Namespace, device: FileAudioDevice | None) -> None:
    seconds = args.seconds
    if seconds is None and device is not None and device.play_duration > 0:
        seconds = device.play_duration + 1.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    ended = asyncio.ensure_future(call.wait_ended())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({ended, stopped}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        stopped.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _fill(summary: CallSummary, call: Call, args: argparse.Namespace) -> None:
    stats = call.stats
    summary.end_reason = call.end_reason.value if call.end_reason else None
    summary.end_message = call.end_message
    summary.talk_seconds = call.duration
    summary.frames_sent = stats.frames_sent
    summary.frames_received = stats.frames_received
    summary.playback_underruns = stats.device_playback_underruns
    summary.rtt_median_ms = stats.rtt_median_ms
    summary.record = str(args.record) if args.record else None


def _print_summary(summary: CallSummary) -> None:
    from rich.console import Console

    out = Console(highlight=False)
    out.print(f"[bold]call[/] {summary.call_sid}  {summary.from_} -> {summary.to}")
    if summary.connected:
        out.print(f"  connected   yes, talked {summary.talk_seconds:.2f} s")
    else:
        out.print("  connected   [red]no[/]")
    out.print(f"  ended       {summary.end_reason} ({summary.end_message})")
    out.print(
        f"  audio       sent {summary.frames_sent} frames, received {summary.frames_received},"
        f" playback underruns {summary.playback_underruns}"
    )
    if summary.rtt_median_ms is not None:
        out.print(f"  media RTT   {summary.rtt_median_ms:.1f} ms median")
    if summary.record:
        out.print(f"  recorded    {summary.record}")


def phone_main(argv: Sequence[str] | None = None) -> int:
    """``audin-phone``: the operator console; ``audin-phone call NUMBER ...``: one headless call."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["call"]:
        return app_main(argv)
    return call_main(argv)


def call_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code, summary = asyncio.run(run_call(args))
    except UsageError as exc:
        print(f"audin-phone: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SandboxError as exc:
        print(f"audin-phone: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except AudioDeviceError as exc:
        print(f"audin-phone: error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except OperatorError as exc:
        print(f"audin-phone: error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.code in _UNREACHABLE_CODES else EXIT_CALL_FAILED
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        _print_summary(summary)
    return code


# ---------------------------------------------------------------------- the operator console


class _OneLineParser(argparse.ArgumentParser):
    """Bad flags give one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _app_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="audin-phone",
        description="The keyboard-driven operator console. Settings come from the config file "
        "(see docs/tui.md); flags win over it.",
        epilog="One headless call instead: audin-phone call --help",
    )
    p.add_argument("--sandbox", action="store_true", default=None, help="start an embedded core")
    p.add_argument(
        "--core-url",
        action="append",
        help="URL of the operator core (repeat for fallback cores, in order)",
    )
    p.add_argument("--token-url", help="your backend's token endpoint (POST -> {token, expiresAt})")
    p.add_argument("--token-command", help="a local command printing {token, expiresAt} as JSON")
    p.add_argument(
        "--token-header", action="append", default=[], help="'Name: value' for token requests"
    )
    p.add_argument(
        "--ca-file", type=Path, help="PEM file of the CAs that signed the core's certificate"
    )
    p.add_argument("--config", type=Path, help="config file (default: the platform's, if any)")
    p.add_argument("--input", help="microphone (index or name)")
    p.add_argument("--output", help="speaker (index or name)")
    p.add_argument(
        "--sounds",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ringtone, ringback and key tones",
    )
    p.add_argument(
        "--audio-rate",
        help=(
            "sound card rate: auto (8 kHz on a PulseAudio/PipeWire device, 48 kHz on other"
            " ALSA devices), native, or Hz"
        ),
    )
    p.add_argument("--caller-id", help="caller ID for outbound calls (one of your numbers)")
    p.add_argument(
        "--number",
        action="append",
        help="answer on this number (repeatable; default: all of the account's)",
    )
    p.add_argument("--online", action="store_true", default=None, help="go online at start")
    p.add_argument("--history", type=Path, help="call history database (SQLite)")
    return p


def app_config(argv: Sequence[str]) -> TuiConfig:
    """The console's settings: the config file, then the flags (ConfigError, UsageError)."""
    from softphone.tui.config import device_spec, load_config, merge_flags, parse_audio_rate

    args = _app_parser().parse_args(argv)
    config = load_config(args.config, required=args.config is not None)
    command: tuple[str, ...] | None = None
    if args.token_command is not None:
        try:
            command = tuple(shlex.split(args.token_command))
        except ValueError as exc:
            raise UsageError(f"--token-command: {exc}") from None
        if not command:
            raise UsageError("--token-command is empty")
    checks = [("--caller-id", args.caller_id)] if args.caller_id is not None else []
    checks += [("--number", n) for n in args.number or []]
    for flag, number in checks:
        try:
            validate_e164(number)
        except ProtocolError as exc:
            raise UsageError(f"{flag}: {exc.message}") from None
    return merge_flags(
        config,
        sandbox=args.sandbox,
        core_urls=tuple(args.core_url) if args.core_url else None,
        token_url=args.token_url,
        token_command=command,
        token_headers=_headers(args.token_header) if args.token_header else None,
        ca_file=args.ca_file,
        input_device=device_spec(args.input),
        output_device=device_spec(args.output),
        sounds=args.sounds,
        audio_rate=parse_audio_rate(args.audio_rate, "--audio-rate")
        if args.audio_rate is not None
        else None,
        caller_id=args.caller_id,
        numbers=tuple(args.number) if args.number else None,
        online_on_start=args.online,
        history_path=args.history,
    )


async def run_app(config: TuiConfig) -> int:
    """Run the console until it exits; its exit status (129 / 143 after the terminal went
    away or SIGTERM, see softphone.tui.terminal)."""
    from softphone.tui import create_app

    if config.sandbox:
        async with _sandbox_core() as url:
            sandbox = replace(
                config, core_urls=(url,), token_url=url + "/sandbox/token", token_command=()
            )
            return await _run(create_app(sandbox))
    config.check_connection()
    return await _run(create_app(config))


async def _run(app: PhoneApp) -> int:
    try:
        await app.run_async()
    finally:
        await app.operator.close(force=True)  # the app asked before quitting during a call
    return app.return_code or EXIT_OK


def app_main(argv: Sequence[str]) -> int:
    from softphone.tui import ConfigError

    # The SDK logs warnings; on a terminal app they must not reach stderr (the event log
    # shows every event instead).
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        config = app_config(argv)
        return asyncio.run(run_app(config))
    except (ConfigError, UsageError) as exc:
        print(f"audin-phone: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SandboxError as exc:
        print(f"audin-phone: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(phone_main())
