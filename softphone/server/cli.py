"""``audin-core``: run the reference operator core and administer it.

audin-core [--sandbox [--caller-generator]] [--host H] [--port P] [--data-dir D]
           [--tls-cert F --tls-key F]                  serve (the default)
audin-core inbound --to NUMBER --from NUMBER           a simulated caller rings
audin-core hangup CALL_SID                             the far end hangs up
audin-core call CALL_SID                               show a call record
audin-core calls [--active] [--account ID] [--limit N] list call records
audin-core operators [--account ID]                    operators online
audin-core callers on|off|status [--interval S]        the sandbox's caller generator
audin-core signing-key rotate [--revoke-previous]|list token signing keys
audin-core account create NAME [--number E164 ...]|list   accounts (database)
audin-core key rotate|revoke|list ...                  API keys (database)
audin-core number add|remove|list ...                  phone numbers (database)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
from softphone.server.auth import API_KEY_PREFIX, new_api_key, utc_iso
from softphone.server.callers import DEFAULT_MEAN_INTERVAL
from softphone.server.limits import (
    DEFAULT_CONNECTIONS_PER_TOKEN,
    DEFAULT_TOKEN_BURST,
    DEFAULT_TOKEN_RATE,
)
from softphone.server.logs import setup_logging
from softphone.server.network import BUSY_MESSAGE, IVR_DIGITS_CONTENT_TYPE
from softphone.server.store import PhoneNumberRow, Store
from softphone.server.timings import CoreTimings
from softphone.server.tls import TlsConfigError, server_tls_context

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
  audin-core calls [--active] [--account ID] [--limit N]
                                     list stored calls, newest first
  audin-core operators [--account ID]
                                     list the operators online (open presence sessions)
  audin-core callers on|off|status [--interval S]
                                     switch the sandbox's caller generator of the running
                                     core (PUT/GET /v1/admin/caller-generator)
  audin-core signing-key rotate [--revoke-previous]
                                     sign session tokens with a new key from now on;
                                     --revoke-previous also invalidates every older token
  audin-core signing-key list        the signing keys (ids and dates, never secrets)
  The commands above talk to the running core (--core-url, X-Admin-Key from
  <data-dir>/admin.key). Those below change its database directly (WAL: a running core
  sees the change at once); --sandbox acts on sandbox.db (a --sandbox core's) instead of
  core.db.
  audin-core account create NAME [--number E164 ...]
                                     new account and API key (printed once)
  audin-core account list            accounts with their numbers and keys
  audin-core key rotate ACCOUNT_ID [--keep-old]
                                     new API key (printed once); the account's other keys
                                     are revoked unless --keep-old
  audin-core key revoke KEY_ID       revoke one API key (effective on its next use)
  audin-core key list ACCOUNT_ID     key ids and dates (never secrets)
  audin-core number add ACCOUNT_ID E164 [--name NAME]
  audin-core number remove E164
  audin-core number list [ACCOUNT_ID]

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
    p.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="PEM certificate (chain): serve https and wss (needs --tls-key)",
    )
    p.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="PEM private key, unencrypted"
    )
    p.add_argument(
        "--token-rate",
        type=float,
        default=DEFAULT_TOKEN_RATE,
        metavar="N",
        help="token requests per second per API key, and per client address on"
        f" /sandbox/token (default {DEFAULT_TOKEN_RATE:g})",
    )
    p.add_argument(
        "--token-burst",
        type=int,
        default=DEFAULT_TOKEN_BURST,
        metavar="N",
        help=f"token requests allowed at once (default {DEFAULT_TOKEN_BURST})",
    )
    p.add_argument(
        "--max-connections-per-token",
        type=int,
        default=DEFAULT_CONNECTIONS_PER_TOKEN,
        metavar="N",
        help="open WebSockets allowed with one session token"
        f" (default {DEFAULT_CONNECTIONS_PER_TOKEN})",
    )
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
        "calls": _calls,
        "operators": _operators,
        "signing-key": _signing_key,
        "account": _account,
        "key": _key,
        "number": _number,
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
    if (opts.tls_cert is None) != (opts.tls_key is None):
        print("audin-core: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_USAGE
    if not opts.token_rate > 0 or opts.token_burst < 1:
        print(
            "audin-core: error: --token-rate must be above 0 and --token-burst at least 1",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if opts.max_connections_per_token < 1:
        print("audin-core: error: --max-connections-per-token must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if opts.tls_cert is not None:
        try:
            server_tls_context(opts.tls_cert, opts.tls_key)
        except TlsConfigError as exc:
            print(f"audin-core: error: {exc}", file=sys.stderr)
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
        tls_cert=opts.tls_cert,
        tls_key=opts.tls_key,
        token_rate=opts.token_rate,
        token_burst=opts.token_burst,
        max_connections_per_token=opts.max_connections_per_token,
    )
    try:
        asyncio.run(_serve(config, as_json=opts.json))
    except TlsConfigError as exc:
        print(f"audin-core: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(
            f"audin-core: error: cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def describe(server: CoreServer) -> dict[str, Any]:
    url = server.url
    ws = "ws" + url.removeprefix("http")
    info: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "tls": server.tls is not None,
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
    # Media relaying allocates a few objects per frame, almost none in reference cycles:
    # the cycle collector's default gen-0 threshold (700) made it run hundreds of times a
    # second under load, and full collections over every connection's objects showed up as
    # 100-250 ms stalls in the p99 of frame forwarding (benchmarks/bench_core_load.py).
    gc.freeze()  # start-up objects are never garbage
    gc.set_threshold(100_000, 50, 1000)
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


def _admin_call(
    opts: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One admin request: (EXIT_OK, answer) or (exit code, None) after printing the error."""
    client, url = _admin_client(opts)
    try:
        with client:
            response = client.request(method, path, json=body, params=params)
    except httpx.HTTPError as exc:
        print(
            f"audin-core: error: cannot reach the core at {url}: {exc} (is it running?)",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE, None
    data = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.is_error:
        detail = data.get("error", {}) if isinstance(data, dict) else {}
        code = detail.get("code", response.status_code)
        print(f"audin-core: error: {code}: {detail.get('message', response.text)}", file=sys.stderr)
        return EXIT_FAILED, None
    return EXIT_OK, data


def _request(
    opts: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> int:
    status, data = _admin_call(opts, method, path, body)
    if status != EXIT_OK:
        return status
    if opts.json:
        print(json.dumps(data))
    else:
        width = max([12, *(len(key) for key in data)])
        for key, value in data.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            print(f"{key:{width}} {shown}")
    return EXIT_OK


def _print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], empty: str) -> None:
    """Rows of JSON objects as aligned text columns (``columns``: key, heading)."""
    if not rows:
        print(empty)
        return

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, list):
            return ",".join(map(str, value)) or "-"
        return str(value)

    table = [[heading for _, heading in columns]] + [
        [cell(row.get(key)) for key, _ in columns] for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)))


def _show_list(
    opts: argparse.Namespace,
    data: dict[str, Any],
    key: str,
    columns: list[tuple[str, str]],
    empty: str,
) -> int:
    """A list answer: the whole JSON with ``--json``, else ``data[key]`` as a table."""
    if opts.json:
        print(json.dumps(data))
    else:
        _print_table(data[key], columns, empty)
    return EXIT_OK


def _admin_list(
    opts: argparse.Namespace,
    path: str,
    key: str,
    columns: list[tuple[str, str]],
    empty: str,
    *,
    params: dict[str, str] | None = None,
) -> int:
    """GET a list from the admin API and show it (:func:`_show_list`)."""
    status, data = _admin_call(opts, "GET", path, params=params)
    if status != EXIT_OK:
        return status
    return _show_list(opts, data, key, columns, empty)


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


def _calls(argv: list[str]) -> int:
    p = _admin_parser("calls", "List the core's call records, newest first.")
    p.add_argument("--active", action="store_true", help="only calls not yet completed")
    p.add_argument("--account", default=None, metavar="ID", help="only this account's calls")
    p.add_argument(
        "--limit",
        type=int,
        default=api.DEFAULT_CALL_LIST,
        metavar="N",
        help=f"at most N calls (1 to {api.MAX_CALL_LIST}, default {api.DEFAULT_CALL_LIST})",
    )
    opts = p.parse_args(argv)
    if not 1 <= opts.limit <= api.MAX_CALL_LIST:
        p.error(f"--limit must be 1 to {api.MAX_CALL_LIST}")
    params = {"limit": str(opts.limit), "active": "true" if opts.active else "false"}
    if opts.account is not None:
        params["account"] = opts.account
    return _admin_list(
        opts,
        api.ADMIN_CALLS_PATH,
        "calls",
        [
            ("callSid", "CALL"),
            ("accountId", "ACCOUNT"),
            ("direction", "DIR"),
            ("from", "FROM"),
            ("to", "TO"),
            ("status", "STATUS"),
            ("endReason", "END"),
            ("operatorRef", "OPERATOR"),
            ("createdAt", "CREATED"),
        ],
        "no calls",
        params=params,
    )


def _operators(argv: list[str]) -> int:
    p = _admin_parser("operators", "List the operators online (open presence sessions).")
    p.add_argument("--account", default=None, metavar="ID", help="only this account's operators")
    opts = p.parse_args(argv)
    params = {"account": opts.account} if opts.account is not None else None
    return _admin_list(
        opts,
        api.ADMIN_OPERATORS_PATH,
        "operators",
        [
            ("accountId", "ACCOUNT"),
            ("operatorRef", "OPERATOR"),
            ("displayName", "NAME"),
            ("availableOn", "AVAILABLE ON"),
            ("callSid", "CALL"),
            ("onlineSince", "ONLINE SINCE"),
            ("sessionId", "SESSION"),
        ],
        "no operators online",
        params=params,
    )


def _signing_key(argv: list[str]) -> int:
    p = _admin_parser(
        "signing-key",
        "Session-token signing keys of the running core. rotate: new tokens are signed with a"
        " new key at once; tokens signed before keep working until they expire, unless"
        " --revoke-previous, which also closes (4001, TOKEN_INVALID) every open WebSocket"
        " whose token an older key signed.",
    )
    p.add_argument("action", choices=["rotate", "list"])
    p.add_argument(
        "--revoke-previous",
        action="store_true",
        help="rotate: revoke every older key (their tokens stop working now)",
    )
    opts = p.parse_args(argv)
    if opts.action == "list":
        if opts.revoke_previous:
            p.error("--revoke-previous goes with rotate")
        return _admin_list(
            opts,
            api.ADMIN_SIGNING_KEYS_PATH,
            "signingKeys",
            [
                ("kid", "KID"),
                ("createdAt", "CREATED"),
                ("active", "ACTIVE"),
                ("revokedAt", "REVOKED"),
            ],
            "no signing keys",
        )
    return _request(
        opts, "POST", api.ADMIN_SIGNING_KEYS_PATH, {"revokePrevious": opts.revoke_previous}
    )


# ---------------------------------------------------------------------- database commands


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, default=None, help="the core's data folder (default: per user)"
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="act on the sandbox database (sandbox.db, used by a --sandbox core)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _open_store(opts: argparse.Namespace, *, create: bool = False) -> Store:
    """The database a core with the same --data-dir and --sandbox uses."""
    config = CoreConfig(data_dir=opts.data_dir or default_data_dir(), sandbox=opts.sandbox)
    if not create and not config.db_path.exists():
        raise SystemExit(
            f"audin-core: error: no database at {config.db_path} (check --data-dir and --sandbox)"
        )
    return Store(config.db_path)


def _fail(message: str) -> int:
    print(f"audin-core: error: {message}", file=sys.stderr)
    return EXIT_FAILED


def _emit(opts: argparse.Namespace, data: Any, lines: list[str]) -> int:
    if opts.json:
        print(json.dumps(data))
    else:
        for line in lines:
            print(line)
    return EXIT_OK


def _valid_number(p: argparse.ArgumentParser, number: str) -> str:
    try:
        return validate_e164(number)
    except ProtocolError as exc:
        p.error(exc.message)


def _account(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="audin-core account", description="Manage accounts.")
    sub = p.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create an account and print its API key once")
    create.add_argument("name")
    create.add_argument(
        "--number", action="append", default=[], metavar="E164", help="number to own"
    )
    _store_options(create)
    listing = sub.add_parser("list", help="list accounts with their numbers and active keys")
    _store_options(listing)
    opts = p.parse_args(argv)
    if opts.action == "list":
        store = _open_store(opts)
        try:
            accounts = store.accounts()
        finally:
            store.close()
        data = {
            "accounts": [
                {
                    "accountId": a.id,
                    "name": a.name,
                    "createdAt": a.created_at,
                    "numbers": a.numbers,
                    "activeKeys": a.active_keys,
                }
                for a in accounts
            ]
        }
        return _show_list(
            opts,
            data,
            "accounts",
            [
                ("accountId", "ACCOUNT"),
                ("name", "NAME"),
                ("numbers", "NUMBERS"),
                ("activeKeys", "KEYS"),
                ("createdAt", "CREATED"),
            ],
            "no accounts",
        )
    for number in opts.number:
        _valid_number(p, number)
    data_dir = opts.data_dir or default_data_dir()
    store = _open_store(opts, create=True)
    try:
        for number in opts.number:
            if store.phone_number_by_e164(number) is not None:
                return _fail(f"{number} already belongs to an account")
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
    result = {"accountId": account_id, "apiKey": api_key, "keyId": row.key_id, "numbers": numbers}
    return _emit(
        opts,
        result,
        [
            f"account      {account_id} ({opts.name})",
            *(f"number       {n['phoneNumber']}  id {n['id']}" for n in numbers),
            f"API key      {api_key}",
            "Store the API key in your backend now: it is shown only once.",
        ],
    )


def _key(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="audin-core key",
        description="Manage the API keys of accounts (in the database; a running core sees"
        " the change on the key's next use).",
    )
    sub = p.add_subparsers(dest="action", required=True)
    rotate = sub.add_parser(
        "rotate", help="issue a new key (printed once) and revoke the account's other keys"
    )
    rotate.add_argument("account_id")
    rotate.add_argument(
        "--keep-old", action="store_true", help="keep the other keys valid (revoke them later)"
    )
    _store_options(rotate)
    revoke = sub.add_parser("revoke", help="revoke one key")
    revoke.add_argument("key_id", help="the key id (the 12 hex digits after audin_)")
    _store_options(revoke)
    listing = sub.add_parser("list", help="key ids and dates of an account (never secrets)")
    listing.add_argument("account_id")
    _store_options(listing)
    opts = p.parse_args(argv)
    store = _open_store(opts)
    try:
        now = utc_iso(time.time())
        if opts.action == "rotate":
            if not store.account_exists(opts.account_id):
                return _fail(f"no account {opts.account_id}")
            api_key, row = new_api_key(opts.account_id)
            revoked = store.rotate_api_key(row, now, keep_old=opts.keep_old)
            return _emit(
                opts,
                {
                    "accountId": opts.account_id,
                    "apiKey": api_key,
                    "keyId": row.key_id,
                    "revoked": revoked,
                },
                [
                    f"account      {opts.account_id}",
                    f"API key      {api_key}",
                    f"revoked      {', '.join(revoked) or 'none'}",
                    "Store the API key in your backend now: it is shown only once.",
                ],
            )
        if opts.action == "revoke":
            key_id = opts.key_id.removeprefix(API_KEY_PREFIX).partition(".")[0]
            info = store.revoke_api_key(key_id, now)
            if info is None:
                return _fail(f"no API key {key_id}")
            return _emit(
                opts,
                {"keyId": info.key_id, "accountId": info.account_id, "revokedAt": info.revoked_at},
                [f"revoked      {info.key_id} of {info.account_id} at {info.revoked_at}"],
            )
        if not store.account_exists(opts.account_id):
            return _fail(f"no account {opts.account_id}")
        keys = [
            {"keyId": k.key_id, "createdAt": k.created_at, "revokedAt": k.revoked_at}
            for k in store.api_keys(opts.account_id)
        ]
    finally:
        store.close()
    return _show_list(
        opts,
        {"accountId": opts.account_id, "keys": keys},
        "keys",
        [("keyId", "KEY ID"), ("createdAt", "CREATED"), ("revokedAt", "REVOKED")],
        "no keys",
    )


def _number(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="audin-core number",
        description="Manage the phone numbers of accounts (in the database; a running core"
        " sees the change at once: new tokens may include an added number, a removed number"
        " receives no more calls and is refused in set_availability).",
    )
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="give a number to an account")
    add.add_argument("account_id")
    add.add_argument("number", metavar="E164")
    add.add_argument("--name", default=None, help="display name (default: the number)")
    _store_options(add)
    remove = sub.add_parser("remove", help="take a number away from its account")
    remove.add_argument("number", metavar="E164")
    _store_options(remove)
    listing = sub.add_parser("list", help="numbers of one account, or of all")
    listing.add_argument("account_id", nargs="?", default=None)
    _store_options(listing)
    opts = p.parse_args(argv)
    if opts.action in ("add", "remove"):
        _valid_number(p, opts.number)
    if opts.action == "add" and opts.name is not None and not 1 <= len(opts.name) <= 100:
        p.error("--name must be 1 to 100 characters")
    store = _open_store(opts)
    try:
        if opts.action == "add":
            if not store.account_exists(opts.account_id):
                return _fail(f"no account {opts.account_id}")
            owner = store.phone_number_by_e164(opts.number)
            if owner is not None:
                return _fail(f"{opts.number} already belongs to {owner.account_id}")
            pn = PhoneNumberRow(
                "PN" + secrets.token_hex(8), opts.account_id, opts.number, opts.name or opts.number
            )
            store.add_phone_number(pn)
            return _emit(
                opts,
                _number_json(pn),
                [f"added        {pn.phone_number}  id {pn.id}  to {pn.account_id}"],
            )
        if opts.action == "remove":
            removed = store.remove_phone_number(opts.number)
            if removed is None:
                return _fail(f"no account owns {opts.number}")
            return _emit(
                opts,
                _number_json(removed),
                [
                    f"removed      {removed.phone_number}  id {removed.id}"
                    f"  from {removed.account_id}"
                ],
            )
        if opts.account_id is not None:
            if not store.account_exists(opts.account_id):
                return _fail(f"no account {opts.account_id}")
            rows = store.phone_numbers(opts.account_id)
        else:
            rows = store.all_phone_numbers()
    finally:
        store.close()
    return _show_list(
        opts,
        {"phoneNumbers": [_number_json(pn) for pn in rows]},
        "phoneNumbers",
        [
            ("phoneNumber", "NUMBER"),
            ("id", "ID"),
            ("accountId", "ACCOUNT"),
            ("displayName", "NAME"),
        ],
        "no numbers",
    )


def _number_json(pn: PhoneNumberRow) -> dict[str, str]:
    return {
        "id": pn.id,
        "accountId": pn.account_id,
        "phoneNumber": pn.phone_number,
        "displayName": pn.display_name,
    }


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["main"]
