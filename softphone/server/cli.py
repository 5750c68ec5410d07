"""``audin-core``: run the reference operator core and administer it.

audin-core [--sandbox [--caller-generator]] [--host H] [--port P] [--data-dir D]
                                                       serve (the default)
audin-core inbound --to NUMBER --from NUMBER           a simulated caller rings
audin-core hangup CALL_SID                             the far end hangs up
audin-core call CALL_SID                               show a call record
audin-core callers on|off|status [--interval S]        the sandbox's caller generator
audin-core account create NAME [--number E164 ...]     new account and API key
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import platformdirs

from softphone.protocol import PROTOCOL_VERSION, ProtocolError, validate_e164
from softphone.protocol import http as api
from softphone.server.app import (
    SANDBOX_NUMBERS,
    CoreConfig,
    CoreServer,
    load_or_create_admin_key,
)
from softphone.server.auth import new_api_key, utc_iso
from softphone.server.callers import DEFAULT_MEAN_INTERVAL
from softphone.server.logs import setup_logging
from softphone.server.network import BUSY_MESSAGE, IVR_DIGITS_CONTENT_TYPE
from softphone.server.store import PhoneNumberRow, Store
from softphone.server.timings import CoreTimings

DEFAULT_PORT = 8765
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
MIN_CALLER_INTERVAL = 0.1
MAX_CALLER_INTERVAL = 3600.0


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("audin-core", appauthor=False))


def _commands_help() -> str:
    t = CoreTimings()
    return f"""\
commands (each has its own --help):
  audin-core [serve] [options]       run the core (the default)
  audin-core inbound --to E164 --from E164
                                     a simulated caller rings one of the core's numbers
  audin-core hangup CALL_SID         the far end of a call hangs up
  audin-core call CALL_SID           show the stored record of a call
  audin-core callers on|off|status [--interval S]
                                     switch the sandbox's caller generator of the running
                                     core (PUT/GET /v1/admin/caller-generator)
  audin-core account create NAME [--number E164 ...]
                                     new account and API key (printed once)

sandbox network (--sandbox; docs/sandbox.md):
  +15550100 echo line        rings {t.echo_ring:g} s, answers, plays back what it hears
  +15550101 IVR              rings {t.ring:g} s with early-media ringback, speaks a menu,
                             collects DTMF up to # or {t.ivr_digit_timeout:g} s without a key,
                             reads the entry back and sends it as call_message
                             {IVR_DIGITS_CONTENT_TYPE}
  +15550102 busy line        ends rejected ("{BUSY_MESSAGE}") after {t.busy_delay:g} s
  +15550103 no-answer line   rings {t.no_answer_timeout:g} s, ends no_answer
  +15550104 failing line     ends failed at once
  +15550105 speech line      rings {t.ring:g} s, plays a recorded message {t.speech_plays} times,
                             hangs up (remote_hangup)
  --caller-generator: simulated customers call {", ".join(n for _, n, _ in SANDBOX_NUMBERS)}
  while an operator is online there (random intervals, mean --caller-interval); switch it
  with `audin-core callers on|off` or, with the operator's own token,
  PUT {api.CALLER_GENERATOR_PATH}.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="audin-core",
        description="Reference operator core for audin-phone (protocol v1).",
        epilog=_commands_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sandbox", action="store_true", help="seed a demo account and serve /sandbox/token"
    )
    p.add_argument(
        "--caller-generator",
        action="store_true",
        help="sandbox: start with the caller generator on (simulated inbound calls)",
    )
    p.add_argument(
        "--caller-interval",
        type=float,
        default=DEFAULT_MEAN_INTERVAL,
        metavar="S",
        help=f"mean seconds between generated calls (default {DEFAULT_MEAN_INTERVAL:g})",
    )
    p.add_argument(
        "--caller-seed",
        type=int,
        default=None,
        metavar="N",
        help="seed of the caller generator (reproducible intervals and callers)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0 = any free)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="folder for the database and admin key"
    )
    p.add_argument("--token-ttl", type=int, default=3600, help="session token lifetime in seconds")
    p.add_argument("--json", action="store_true", help="print the URLs as one JSON line on start")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="logs on stderr: readable text, or one JSON object per line (secrets masked)",
    )
    return p


def _admin_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"audin-core {prog}", description=description)
    p.add_argument(
        "--core-url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="the running core"
    )
    p.add_argument("--data-dir", type=Path, default=None, help="where the core keeps admin.key")
    p.add_argument(
        "--admin-key", default=None, help="admin key (default: read from the data folder)"
    )
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "inbound": _inbound,
        "hangup": _hangup,
        "call": _show_call,
        "callers": _callers,
        "account": _account,
    }
    if args and args[0] in commands:
        return commands[args[0]](args[1:])
    if args and args[0] == "serve":
        args = args[1:]
    opts = _parser().parse_args(args)
    if not 0 <= opts.port <= 65535:
        print(f"audin-core: error: --port {opts.port} is not a TCP port", file=sys.stderr)
        return EXIT_USAGE
    if not 10 <= opts.token_ttl <= 86400:
        print("audin-core: error: --token-ttl must be 10 to 86400 seconds", file=sys.stderr)
        return EXIT_USAGE
    if opts.caller_generator and not opts.sandbox:
        print("audin-core: error: --caller-generator needs --sandbox", file=sys.stderr)
        return EXIT_USAGE
    if not MIN_CALLER_INTERVAL <= opts.caller_interval <= MAX_CALLER_INTERVAL:
        print(
            f"audin-core: error: --caller-interval must be {MIN_CALLER_INTERVAL:g} to"
            f" {MAX_CALLER_INTERVAL:g} seconds",
            file=sys.stderr,
        )
        return EXIT_USAGE
    setup_logging(opts.log_level, opts.log_format)
    config = CoreConfig(
        data_dir=opts.data_dir or default_data_dir(),
        host=opts.host,
        port=opts.port,
        sandbox=opts.sandbox,
        token_ttl=opts.token_ttl,
        caller_generator=opts.caller_generator,
        caller_interval=opts.caller_interval,
        caller_seed=opts.caller_seed,
    )
    try:
        asyncio.run(_serve(config, as_json=opts.json))
    except OSError as exc:
        print(
            f"audin-core: error: cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def describe(server: CoreServer) -> dict[str, Any]:
    url = server.url
    ws = url.replace("http://", "ws://", 1)
    info: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "coreUrl": url,
        "presenceUrl": ws + api.PRESENCE_PATH,
        "healthUrl": url + api.HEALTH_PATH,
        "sandbox": server.config.sandbox,
        "dataDir": str(server.config.data_dir),
    }
    if server.config.sandbox:
        info["tokenUrl"] = url + api.SANDBOX_TOKEN_PATH
        info["numbers"] = [
            {"id": i, "phoneNumber": n, "displayName": d} for i, n, d in SANDBOX_NUMBERS
        ]
        info["network"] = [{"phoneNumber": n, "name": d} for n, d in server.network.describe()]
        generator = server.callers.state()
        info["callerGenerator"] = {
            "enabled": generator.enabled,
            "meanIntervalSeconds": generator.mean_interval_seconds,
        }
    return info


async def _serve(config: CoreConfig, *, as_json: bool) -> None:
    server = CoreServer(config)
    await server.start()
    info = describe(server)
    if as_json:
        print(json.dumps(info), flush=True)
    else:
        _print_banner(info)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def _print_banner(info: dict[str, Any]) -> None:
    from rich.console import Console

    out = Console(highlight=False)
    mode = "sandbox" if info["sandbox"] else "production"
    out.print(
        f"[bold]audin-core[/] protocol v{info['protocol']} ({mode}) listening on {info['coreUrl']}"
    )
    out.print(f"  core URL         {info['coreUrl']}")
    out.print(f"  presence         {info['presenceUrl']}")
    out.print(f"  health           {info['healthUrl']}")
    if info["sandbox"]:
        out.print(f"  token URL        {info['tokenUrl']}  (POST; stands in for your backend)")
        numbers = ", ".join(f"{n['phoneNumber']} ({n['id']})" for n in info["numbers"])
        out.print(f"  your numbers     {numbers}")
        for dest in info["network"]:
            out.print(f"  call             {dest['phoneNumber']}  {dest['name']}")
        out.print(
            f"  try              audin-phone call +15550100 --core-url {info['coreUrl']}"
            f" --token-url {info['tokenUrl']} --seconds 5"
        )
        out.print("                   audin-core inbound --to +15550150 --from +15551234")
        generator = info["callerGenerator"]
        state = (
            f"on, a call every {generator['meanIntervalSeconds']:g} s on average"
            if generator["enabled"]
            else "off"
        )
        out.print(f"  caller generator {state}  (audin-core callers on|off)")
    out.print(f"  data             {info['dataDir']}")
    out.print("Ctrl-C stops the core.", style="dim")


# ---------------------------------------------------------------------- admin commands


def _admin_client(opts: argparse.Namespace) -> tuple[httpx.Client, str]:
    key = opts.admin_key
    if key is None:
        path = (opts.data_dir or default_data_dir()) / "admin.key"
        if not path.exists():
            raise SystemExit(
                f"audin-core: error: no admin key at {path}; pass --admin-key or --data-dir"
            )
        key = path.read_text().strip()
    return httpx.Client(
        base_url=opts.core_url, timeout=10.0, headers={"X-Admin-Key": key}
    ), opts.core_url


def _request(
    opts: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> int:
    client, url = _admin_client(opts)
    try:
        with client:
            response = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        print(
            f"audin-core: error: cannot reach the core at {url}: {exc} (is it running?)",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    data = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.is_error:
        detail = data.get("error", {}) if isinstance(data, dict) else {}
        code = detail.get("code", response.status_code)
        print(f"audin-core: error: {code}: {detail.get('message', response.text)}", file=sys.stderr)
        return EXIT_FAILED
    if opts.json:
        print(json.dumps(data))
    else:
        width = max([12, *(len(key) for key in data)])
        for key, value in data.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"{key:{width}} {shown}")
    return EXIT_OK


def _inbound(argv: list[str]) -> int:
    p = _admin_parser("inbound", "A simulated caller rings one of the core's numbers.")
    p.add_argument("--to", required=True, help="the called number (one of an account's numbers)")
    p.add_argument("--from", dest="from_", required=True, help="the caller's number (E.164)")
    p.add_argument("--ring-timeout", type=float, default=30.0, help="seconds before no_answer")
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="custom parameter"
    )
    opts = p.parse_args(argv)
    try:
        validate_e164(opts.to)
        validate_e164(opts.from_)
    except ProtocolError as exc:
        p.error(exc.message)
    params = dict(_split_param(p, item) for item in opts.param)
    body = {"from": opts.from_, "to": opts.to, "params": params, "ringTimeout": opts.ring_timeout}
    return _request(opts, "POST", api.INBOUND_CALLS_PATH, body)


def _split_param(p: argparse.ArgumentParser, item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        p.error(f"--param {item!r} is not KEY=VALUE")
    return key, value


def _hangup(argv: list[str]) -> int:
    p = _admin_parser("hangup", "The far end of a call hangs up.")
    p.add_argument("call_sid")
    opts = p.parse_args(argv)
    return _request(opts, "POST", f"/v1/admin/calls/{opts.call_sid}/hangup")


def _show_call(argv: list[str]) -> int:
    p = _admin_parser("call", "Show the stored record of a call.")
    p.add_argument("call_sid")
    opts = p.parse_args(argv)
    return _request(opts, "GET", f"/v1/admin/calls/{opts.call_sid}")


def _callers(argv: list[str]) -> int:
    p = _admin_parser(
        "callers",
        "Switch the caller generator of a running sandbox core: simulated customers call"
        " +15550150 / +15550151 at random intervals while an operator is online there.",
    )
    p.add_argument(
        "action",
        choices=["on", "off", "status"],
        help="on: start generating calls; off: stop; status: show the state",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="S",
        help=f"mean seconds between calls ({MIN_CALLER_INTERVAL:g} to"
        f" {MAX_CALLER_INTERVAL:g}; default: keep the core's)",
    )
    opts = p.parse_args(argv)
    if opts.interval is not None:
        if opts.action == "status":
            p.error("--interval goes with on or off")
        if not MIN_CALLER_INTERVAL <= opts.interval <= MAX_CALLER_INTERVAL:
            p.error(
                f"--interval must be {MIN_CALLER_INTERVAL:g} to {MAX_CALLER_INTERVAL:g} seconds"
            )
    if opts.action == "status":
        return _request(opts, "GET", api.ADMIN_CALLER_GENERATOR_PATH)
    body: dict[str, Any] = {"enabled": opts.action == "on"}
    if opts.interval is not None:
        body["meanIntervalSeconds"] = opts.interval
    return _request(opts, "PUT", api.ADMIN_CALLER_GENERATOR_PATH, body)


def _account(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="audin-core account", description="Manage accounts.")
    sub = p.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create an account and print its API key once")
    create.add_argument("name")
    create.add_argument(
        "--number", action="append", default=[], metavar="E164", help="number to own"
    )
    create.add_argument("--data-dir", type=Path, default=None)
    create.add_argument("--json", action="store_true")
    opts = p.parse_args(argv)
    for number in opts.number:
        try:
            validate_e164(number)
        except ProtocolError as exc:
            p.error(exc.message)
    data_dir = opts.data_dir or default_data_dir()
    store = Store(data_dir / "core.db")
    try:
        for number in opts.number:
            if store.phone_number_by_e164(number) is not None:
                print(f"audin-core: error: {number} already belongs to an account", file=sys.stderr)
                return EXIT_FAILED
        account_id = "AC" + secrets.token_hex(8)
        now = utc_iso(time.time())
        store.create_account(account_id, opts.name, now)
        api_key, row = new_api_key(account_id)
        store.add_api_key(row, now)
        numbers = []
        for number in opts.number:
            pn = PhoneNumberRow("PN" + secrets.token_hex(8), account_id, number, number)
            store.add_phone_number(pn)
            numbers.append({"id": pn.id, "phoneNumber": number})
    finally:
        store.close()
    load_or_create_admin_key(data_dir / "admin.key")
    result = {"accountId": account_id, "apiKey": api_key, "numbers": numbers}
    if opts.json:
        print(json.dumps(result))
    else:
        print(f"account      {account_id} ({opts.name})")
        for n in numbers:
            print(f"number       {n['phoneNumber']}  id {n['id']}")
        print(f"API key      {api_key}")
        print("Store the API key in your backend now: it is shown only once.")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["main"]
