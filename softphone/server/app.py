"""HTTP and WebSocket front of audin-core (aiohttp), speaking protocol v1.

Authenticates every request and socket, validates every message with
:mod:`softphone.protocol`, and hands decoded input to :class:`~softphone.server.core.Core`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from softphone.protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Ack,
    Channel,
    CloseCode,
    Dtmf,
    Error,
    ErrorCode,
    Hangup,
    Hello,
    Message,
    Mute,
    Ping,
    Pong,
    ProtocolError,
    SendMessage,
    UpdateToken,
    Welcome,
    audio_payload,
    check_version,
    decode_audio_frame,
    decode_message,
    encode_message,
    path_version,
    request_id_of,
)
from softphone.protocol import http as api
from softphone.server.auth import ApiKeyVerifier, Claims, TokenAuthority, bearer, utc_iso
from softphone.server.callers import DEFAULT_MEAN_INTERVAL, CallerGenerator
from softphone.server.core import CallStatus, Core, CoreCall, MediaLeg, OperatorSession
from softphone.server.inline_ws import InlineWebSocketResponse, set_inline_handler
from softphone.server.limits import (
    AUTH_FAILURE_BURST,
    AUTH_FAILURE_RATE,
    DEFAULT_CONNECTIONS_PER_TOKEN,
    DEFAULT_TOKEN_BURST,
    DEFAULT_TOKEN_RATE,
    ConnectionLimiter,
    RateLimited,
    RateLimiter,
)
from softphone.server.network import SimulatedNetwork
from softphone.server.store import CallRow, PhoneNumberRow, Store
from softphone.server.timings import CoreTimings
from softphone.server.tls import server_tls_context
from softphone.server.voices import DEFAULT_ASSETS_DIR

log = logging.getLogger("audin.core")

SANDBOX_ACCOUNT: Final = "acct_sandbox"
SANDBOX_NUMBERS: Final = (
    ("pn_15550150", "+15550150", "Sandbox line A"),
    ("pn_15550151", "+15550151", "Sandbox line B"),
)
HELLO_TIMEOUT: Final = 10.0
MAX_FRAME_BYTES: Final = 64 * 1024
MAX_CONSECUTIVE_ERRORS: Final = 20
AUDIO_SEND_BUFFER: Final = 64 * 1024
"""Bytes that may wait in a media leg's transport (past the kernel's full socket buffer)
before further audio frames to it are dropped rather than queued."""


@dataclass
class CoreConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    sandbox: bool = False
    token_ttl: int = 3600
    admin_key: str | None = None
    timings: CoreTimings = field(default_factory=CoreTimings)
    caller_generator: bool = False
    """Start the sandbox's caller generator on (sandbox only; switchable at run time)."""
    caller_interval: float = DEFAULT_MEAN_INTERVAL
    """Mean seconds between two generated calls."""
    caller_seed: int | None = None
    """Seed of the caller generator's random numbers (reproducible runs and tests)."""
    assets_dir: Path = DEFAULT_ASSETS_DIR
    """Folder of the sandbox voice clips (``assets/sandbox`` of the source tree)."""
    tls_cert: Path | None = None
    """PEM certificate chain: with ``tls_key``, the core serves https and wss."""
    tls_key: Path | None = None
    """PEM private key (unencrypted) of ``tls_cert``."""
    token_rate: float = DEFAULT_TOKEN_RATE
    """Token requests per second per API key (and per client address on /sandbox/token)."""
    token_burst: int = DEFAULT_TOKEN_BURST
    """Token requests allowed at once, before ``token_rate`` applies."""
    max_connections_per_token: int = DEFAULT_CONNECTIONS_PER_TOKEN
    """Open WebSockets authenticated by the same session token (its ``jti``)."""

    @property
    def db_path(self) -> Path:
        return self.data_dir / ("sandbox.db" if self.sandbox else "core.db")

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"


def load_or_create_admin_key(path: Path) -> str:
    """The admin key of a data folder, created (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "adm_" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


class WsPeer:
    """An aiohttp WebSocket as a :class:`~softphone.server.core.Peer`."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        channel: Channel,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.channel = channel
        self.transport = transport
        self.last_rx = time.monotonic()
        self.heartbeat_interval = 25.0
        self.expires_at = 0
        self.claims: Claims | None = None
        self.invalid_in_a_row = 0  # consecutive invalid messages (reset by a valid one)
        self.audio_dropped = 0  # audio frames not sent: send buffer over the limit

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, message: Message) -> None:
        try:
            await self.ws.send_str(encode_message(message))
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ConnectionError(str(exc)) from exc

    def send_audio(self, frame: bytes) -> bool:
        """Write one audio frame as a binary WebSocket message, now, without waiting.

        Real-time audio is not worth queueing: once the kernel's socket buffer is full and
        more than ``AUDIO_SEND_BUFFER`` bytes wait in the transport (a peer that stopped
        reading for seconds), the frame is dropped and counted instead. aiohttp's own
        writer writes each message with one ``transport.write`` as well, so messages never
        interleave."""
        transport = self.transport
        if transport is None or self.ws.closed or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > AUDIO_SEND_BUFFER:
            self.audio_dropped += 1
            return False
        size = len(frame)  # an audio frame is far below 64 KiB: 7- or 16-bit length
        header = bytes((0x82, size)) if size < 126 else b"\x82\x7e" + size.to_bytes(2, "big")
        transport.write(header + frame)
        return True

    async def close(self, code: CloseCode, reason: str) -> None:
        await self.ws.close(code=int(code), message=reason.encode()[:120])

    async def fail(self, code: ErrorCode, message: str, close: CloseCode) -> None:
        with contextlib.suppress(ConnectionError):
            await self.send(Error(code=code.value, message=message))
        await self.close(close, code.value)


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so that port 0 yields a known ephemeral port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def error_response(code: ErrorCode, message: str) -> web.Response:
    supported = list(SUPPORTED_VERSIONS) if code == ErrorCode.UNSUPPORTED_VERSION else None
    return web.Response(
        status=code.http_status,
        body=api.error_body(code, message, supported_versions=supported),
        content_type="application/json",
    )


def json_response(body: object, status: int = 200) -> web.Response:
    import msgspec

    return web.Response(
        status=status, body=msgspec.json.encode(body), content_type="application/json"
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RateLimited as exc:
        response = error_response(exc.code, exc.message)
        response.headers["Retry-After"] = exc.retry_after_header
        return response
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    except web.HTTPException as exc:
        # aiohttp's own refusals (413 body too large, 405, 400 for a GET without Upgrade on a
        # WebSocket path...) get the same JSON error body as everything else.
        if exc.status < 400:
            raise
        code = {
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.NOT_FOUND,
            413: ErrorCode.MESSAGE_TOO_LARGE,
        }.get(exc.status, ErrorCode.BAD_REQUEST)
        return web.Response(
            status=exc.status,
            body=api.error_body(code, exc.text or exc.reason),
            content_type="application/json",
        )
    except Exception:
        log.exception("request %s %s failed", request.method, request.path)
        return error_response(ErrorCode.INTERNAL_ERROR, "internal error")


class CoreServer:
    """audin-core as an embeddable object: ``async with CoreServer(config) as core: ...``."""

    def __init__(self, config: CoreConfig) -> None:
        if config.caller_generator and not config.sandbox:
            raise ValueError("the caller generator needs a sandbox core (sandbox=True)")
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        self.config = config
        self.tls: ssl.SSLContext | None = (
            server_tls_context(config.tls_cert, config.tls_key)
            if config.tls_cert is not None and config.tls_key is not None
            else None
        )
        self.token_limiter = RateLimiter(config.token_rate, config.token_burst)
        """Token requests per API key id, and per client address on /sandbox/token."""
        self.auth_failures = RateLimiter(AUTH_FAILURE_RATE, AUTH_FAILURE_BURST)
        """Refused API keys per client address."""
        self.connections = ConnectionLimiter(config.max_connections_per_token)
        self.started_at = time.time()
        self._started = time.monotonic()
        self.store = Store(config.db_path)
        self.admin_key = config.admin_key or load_or_create_admin_key(config.admin_key_path)
        self.tokens = TokenAuthority(self.store)
        self.api_keys = ApiKeyVerifier(self.store)
        self.network = SimulatedNetwork(config.timings, config.assets_dir)
        self.core = Core(self.store, self.network, config.timings)
        self.callers = CallerGenerator(
            self.core,
            SANDBOX_ACCOUNT,
            [(pn_id, number) for pn_id, number, _ in SANDBOX_NUMBERS],
            mean_interval=config.caller_interval,
            seed=config.caller_seed,
        )
        self._peers: set[WsPeer] = set()
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = config.port
        recovered = self.store.end_open_calls("failed", "the core restarted", utc_iso(time.time()))
        if recovered:
            log.warning("marked %d unfinished calls from a previous run as failed", recovered)
        if config.sandbox:
            self._seed_sandbox()
            if self.network.voices_problem is not None:
                log.warning("%s", self.network.voices_problem)

    # ------------------------------------------------------------------ life cycle

    @property
    def url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls is not None else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[errors_middleware], client_max_size=api.MAX_BODY_BYTES)
        app.router.add_post(api.TOKEN_PATH, self.issue_token)
        app.router.add_get(api.PHONE_NUMBERS_PATH, self.list_numbers)
        app.router.add_get(api.PRESENCE_PATH, self.presence)
        app.router.add_get("/v1/calls/{call_sid}/media", self.media)
        app.router.add_get(api.HEALTH_PATH, self.health)
        app.router.add_post(api.INBOUND_CALLS_PATH, self.admin_inbound)
        app.router.add_get(api.ADMIN_OPERATORS_PATH, self.admin_operators)
        app.router.add_get(api.ADMIN_CALLS_PATH, self.admin_calls)
        app.router.add_get(api.ADMIN_SIGNING_KEYS_PATH, self.admin_signing_keys)
        app.router.add_post(api.ADMIN_SIGNING_KEYS_PATH, self.admin_rotate_signing_key)
        app.router.add_get("/v1/admin/calls/{call_sid}", self.admin_call)
        app.router.add_post("/v1/admin/calls/{call_sid}/hangup", self.admin_hangup)
        app.router.add_get(api.CALLER_GENERATOR_PATH, self.sandbox_callers)
        app.router.add_put(api.CALLER_GENERATOR_PATH, self.sandbox_callers)
        app.router.add_get(api.ADMIN_CALLER_GENERATOR_PATH, self.admin_callers)
        app.router.add_put(api.ADMIN_CALLER_GENERATOR_PATH, self.admin_callers)
        if self.config.sandbox:
            app.router.add_post(api.SANDBOX_TOKEN_PATH, self.sandbox_token)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = _listen(self.config.host, self.config.port)
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, ssl_context=self.tls).start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        log.info(
            "audin-core listening on %s (sandbox=%s)",
            self.url,
            self.config.sandbox,
            extra={"event": "core_started", "url": self.url, "sandbox": self.config.sandbox},
        )
        if self.config.caller_generator:
            await self.callers.configure(enabled=True)

    async def stop(self) -> None:
        log.info(
            "audin-core stopping: ending %d calls",
            len(self.core.calls),
            extra={"event": "core_stopping", "calls": len(self.core.calls)},
        )
        await self.callers.stop()
        await self.core.shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for peer in list(self._peers):
            with contextlib.suppress(Exception):
                await peer.close(CloseCode.GOING_AWAY, "core shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.store.close()

    async def __aenter__(self) -> CoreServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _seed_sandbox(self) -> None:
        now = utc_iso(time.time())
        if not self.store.account_exists(SANDBOX_ACCOUNT):
            self.store.create_account(SANDBOX_ACCOUNT, "Sandbox", now)
        existing = {pn.id for pn in self.store.phone_numbers(SANDBOX_ACCOUNT)}
        for pn_id, number, name in SANDBOX_NUMBERS:
            if pn_id not in existing:
                self.store.add_phone_number(PhoneNumberRow(pn_id, SANDBOX_ACCOUNT, number, name))

    async def _sweep(self) -> None:
        """Close sockets that stopped talking (heartbeat) or whose token expired."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            wall = time.time()
            for peer in list(self._peers):
                if peer.closed:
                    self._peers.discard(peer)
                elif now - peer.last_rx > 2 * peer.heartbeat_interval + 1.0:
                    log.info("closing silent %s socket", peer.channel)
                    await peer.fail(
                        ErrorCode.HEARTBEAT_TIMEOUT,
                        f"nothing received for {2 * peer.heartbeat_interval:.0f} s",
                        CloseCode.HEARTBEAT_TIMEOUT,
                    )
                elif peer.expires_at and wall >= peer.expires_at:
                    await peer.fail(
                        ErrorCode.TOKEN_EXPIRED,
                        "the session token expired; reconnect with a fresh token",
                        CloseCode.UNAUTHORIZED,
                    )

    # ------------------------------------------------------------------ helpers

    def _claims(self, request: web.Request) -> Claims:
        claims = self.tokens.verify(bearer(request.headers.get("Authorization")))
        if not self.store.account_exists(claims.account_id):
            raise ProtocolError(ErrorCode.TOKEN_INVALID, "the token's account no longer exists")
        return claims

    def _require_admin(self, request: web.Request) -> None:
        given = request.headers.get("X-Admin-Key", "")
        if not secrets.compare_digest(given.encode(), self.admin_key.encode()):
            raise ProtocolError(ErrorCode.FORBIDDEN, "a valid X-Admin-Key header is required")

    def _issue(
        self,
        account_id: str,
        operator_ref: str,
        display_name: str,
        numbers: tuple[str, ...],
        ttl: int | None,
    ) -> web.Response:
        token, exp = self.tokens.issue(
            account_id=account_id,
            operator_ref=operator_ref,
            display_name=display_name,
            phone_number_ids=numbers,
            ttl=ttl or self.config.token_ttl,
        )
        log.info(
            "token issued account=%s operator=%s expires=%s",
            account_id,
            operator_ref,
            utc_iso(exp),
            extra={
                "event": "token_issued",
                "account": account_id,
                "operator": operator_ref,
                "expires_at": utc_iso(exp),
            },
        )
        return json_response(api.TokenResponse(token=token, expires_at=utc_iso(exp)))

    # ------------------------------------------------------------------ HTTP endpoints

    def _rate_limit(self, limiter: RateLimiter, key: str, what: str, **fields: str) -> None:
        wait = limiter.take(key)
        if wait > 0:
            log.warning(
                "rate limited: %s (retry after %.1f s)",
                what,
                wait,
                extra={"event": "rate_limited", **fields},
            )
            raise RateLimited(
                f"too many token requests {what}; retry in {max(1, math.ceil(wait))} s", wait
            )

    async def issue_token(self, request: web.Request) -> web.Response:
        api_key = request.headers.get("X-API-Key")
        client = request.remote or "unknown"
        refused = self.auth_failures.wait(client)
        if refused > 0:
            raise RateLimited(
                "too many refused API keys from this address;"
                f" retry in {max(1, math.ceil(refused))} s",
                refused,
            )
        try:
            key = await asyncio.to_thread(self.api_keys.authenticate, api_key)
        except ProtocolError:
            self.auth_failures.take(client)
            log.info(
                "API key refused from %s",
                client,
                extra={"event": "api_key_refused", "client_ip": client},
            )
            raise
        account_id = key.account_id
        self._rate_limit(
            self.token_limiter,
            f"key:{key.key_id}",
            f"for API key {key.key_id}",
            account=account_id,
            key_id=key.key_id,
        )
        body = api.decode_body(await request.read(), api.TokenRequest)
        owned = {pn.id for pn in self.store.phone_numbers(account_id)}
        foreign = [pn for pn in body.phone_number_ids if pn not in owned]
        if foreign:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"phone numbers not owned by this account: {', '.join(foreign)}",
            )
        return self._issue(
            account_id,
            body.operator_ref,
            body.display_name,
            tuple(dict.fromkeys(body.phone_number_ids)),
            body.ttl_seconds,
        )

    async def sandbox_token(self, request: web.Request) -> web.Response:
        client = request.remote or "unknown"
        self._rate_limit(self.token_limiter, f"ip:{client}", f"from {client}", client_ip=client)
        raw = await request.read()
        body = (
            api.decode_body(raw, api.SandboxTokenRequest)
            if raw.strip()
            else api.SandboxTokenRequest()
        )
        numbers = tuple(pn.id for pn in self.store.phone_numbers(SANDBOX_ACCOUNT))
        return self._issue(
            SANDBOX_ACCOUNT, body.operator_ref, body.display_name, numbers, body.ttl_seconds
        )

    async def list_numbers(self, request: web.Request) -> web.Response:
        claims = self._claims(request)
        allowed = set(claims.phone_number_ids)
        numbers = [
            api.PhoneNumberInfo(
                id=pn.id, phone_number=pn.phone_number, display_name=pn.display_name
            )
            for pn in self.store.phone_numbers(claims.account_id)
            if pn.id in allowed
        ]
        return json_response(api.PhoneNumberList(phone_numbers=numbers))

    async def health(self, request: web.Request) -> web.Response:
        sessions = list(self.core.sessions.values())
        return json_response(
            api.Health(
                status="ok",
                protocol=PROTOCOL_VERSION,
                sandbox=self.config.sandbox,
                tls=self.tls is not None,
                sessions=len(sessions),
                calls=len(self.core.calls),
                operators_online=len({s.operator_key for s in sessions if not s.closed}),
                calls_in_progress=sum(
                    1 for c in self.core.calls.values() if c.status == CallStatus.IN_PROGRESS
                ),
                started_at=utc_iso(self.started_at),
                uptime_seconds=round(time.monotonic() - self._started, 3),
            )
        )

    async def admin_operators(self, request: web.Request) -> web.Response:
        """``GET /v1/admin/operators[?account=ID]``: every open presence session."""
        self._require_admin(request)
        account = request.query.get("account")
        now_wall, now_mono = time.time(), time.monotonic()
        active = {
            call.operator_key: call.sid
            for call in self.core.calls.values()
            if call.operator_key is not None and call.status != CallStatus.COMPLETED
        }
        operators = [
            api.OnlineOperator(
                session_id=s.session_id,
                account_id=s.claims.account_id,
                operator_ref=s.claims.operator_ref,
                display_name=s.claims.display_name,
                available_on=sorted(s.availability),
                online_since=utc_iso(now_wall - (now_mono - s.opened_at)),
                token_expires_at=utc_iso(s.claims.expires_at),
                call_sid=active.get(s.operator_key),
            )
            for s in sorted(self.core.sessions.values(), key=lambda s: s.opened_at)
            if not s.closed and (account is None or s.claims.account_id == account)
        ]
        return json_response(api.OperatorList(operators=operators))

    async def admin_calls(self, request: web.Request) -> web.Response:
        """``GET /v1/admin/calls[?active=true][&account=ID][&limit=N]``: stored calls."""
        self._require_admin(request)
        query = request.query
        active = _query_bool(query.get("active", "false"), "active")
        raw_limit = query.get("limit", str(api.DEFAULT_CALL_LIST))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= api.MAX_CALL_LIST:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"limit must be an integer from 1 to {api.MAX_CALL_LIST}"
            )
        rows = self.store.calls(
            account_id=query.get("account"), active=active, limit=int(raw_limit)
        )
        return json_response(api.CallList(calls=[_summary(row) for row in rows]))

    async def admin_signing_keys(self, request: web.Request) -> web.Response:
        """``GET /v1/admin/signing-keys``: the core's signing keys, without secrets."""
        self._require_admin(request)
        return json_response(
            api.SigningKeyList(
                signing_keys=[
                    api.SigningKeyInfo(
                        kid=row.kid,
                        created_at=row.created_at,
                        active=row.kid == self.tokens.active_kid,
                        revoked_at=row.revoked_at,
                    )
                    for row in self.store.signing_key_rows()
                ]
            )
        )

    async def admin_rotate_signing_key(self, request: web.Request) -> web.Response:
        """``POST /v1/admin/signing-keys``: sign with a new key from now on; optionally revoke
        the older ones and close every socket whose token one of them signed (4001)."""
        self._require_admin(request)
        raw = await request.read()
        body = (
            api.decode_body(raw, api.SigningKeyRotation)
            if raw.strip()
            else api.SigningKeyRotation()
        )
        kid = self.tokens.rotate()
        revoked = self.tokens.revoke_previous() if body.revoke_previous else []
        closed = 0
        if revoked:
            closed = await self._close_unverifiable()
        log.warning(
            "signing key rotated: now %s; revoked %s; closed %d sockets",
            kid,
            ", ".join(revoked) or "none",
            closed,
            extra={
                "event": "signing_key_rotated",
                "kid": kid,
                "revoked": ",".join(revoked),
                "closed_sockets": closed,
            },
        )
        return json_response(
            api.SigningKeyRotated(kid=kid, revoked=revoked, closed_sockets=closed), status=201
        )

    async def _close_unverifiable(self) -> int:
        """Close (4001, TOKEN_INVALID) every socket whose token's signing key was revoked."""
        doomed = [
            peer
            for peer in list(self._peers)
            if not peer.closed
            and peer.claims is not None
            and not self.tokens.verifies(peer.claims.kid)
        ]
        for peer in doomed:
            await peer.fail(
                ErrorCode.TOKEN_INVALID,
                "the token's signing key was revoked; reconnect with a fresh token",
                CloseCode.UNAUTHORIZED,
            )
        return len(doomed)

    async def admin_inbound(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        body = api.decode_body(await request.read(), api.InboundCallRequest)
        sid, offered = await self.core.place_inbound(
            body.from_, body.to, dict(body.params), body.ring_timeout
        )
        return json_response(api.InboundCallResponse(call_sid=sid, offered_to=offered), status=201)

    async def admin_call(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        row = self.store.call(request.match_info["call_sid"])
        if row is None:
            raise ProtocolError(ErrorCode.CALL_NOT_FOUND, "no such call")
        return json_response(
            api.CallRecord(
                **_row_fields(row),
                params=row.params,
                dtmf=self.store.dtmf(row.call_sid),
                feedback=[
                    api.CallFeedback(operator_ref=ref, score=score, issue=issue)
                    for ref, score, issue in self.store.feedback(row.call_sid)
                ],
            )
        )

    async def admin_hangup(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        call = await self.core.remote_hangup(request.match_info["call_sid"])
        log.info(
            "call %s hung up by the admin",
            call.sid,
            extra={"event": "admin_hangup", "call_sid": call.sid, "account": call.account_id},
        )
        return json_response({"callSid": call.sid, "status": call.status.value})

    async def sandbox_callers(self, request: web.Request) -> web.Response:
        """``GET``/``PUT /v1/sandbox/caller-generator``: the operator's own switch."""
        claims = self._claims(request)
        if claims.account_id != SANDBOX_ACCOUNT:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "the caller generator belongs to the sandbox account; this token is not for it",
            )
        return await self._callers(request)

    async def admin_callers(self, request: web.Request) -> web.Response:
        """``GET``/``PUT /v1/admin/caller-generator`` (``audin-core callers``)."""
        self._require_admin(request)
        return await self._callers(request)

    async def _callers(self, request: web.Request) -> web.Response:
        if not self.config.sandbox:
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                "the caller generator runs only on a sandbox core (audin-core --sandbox)",
            )
        if request.method == "PUT":
            body = api.decode_body(await request.read(), api.CallerGeneratorUpdate)
            await self.callers.configure(
                enabled=body.enabled, mean_interval=body.mean_interval_seconds
            )
        return json_response(self.callers.state())

    async def not_found(self, request: web.Request) -> web.Response:
        version = path_version(request.path)
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol v{version} is not served here; this core speaks "
                + ", ".join(f"v{v}" for v in SUPPORTED_VERSIONS),
            )
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no endpoint {request.method} {request.path}")

    # ------------------------------------------------------------------ WebSockets

    @contextlib.asynccontextmanager
    async def _connection_slot(self, claims: Claims) -> AsyncIterator[None]:
        """Hold one of the token's WebSocket slots for the life of a socket; with none free,
        refuse the upgrade (``TOO_MANY_CONNECTIONS``, HTTP 429)."""
        if not self.connections.acquire(claims.token_id):
            log.warning(
                "refused a WebSocket of %s/%s: %d open with the same token",
                claims.account_id,
                claims.operator_ref,
                self.connections.limit,
                extra={
                    "event": "too_many_connections",
                    "account": claims.account_id,
                    "operator": claims.operator_ref,
                },
            )
            raise ProtocolError(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"{self.connections.limit} WebSockets are already open with this token;"
                " fetch a fresh token for each connection",
            )
        try:
            yield
        finally:
            self.connections.release(claims.token_id)

    async def _open_ws(
        self, request: web.Request, channel: Channel, claims: Claims
    ) -> tuple[WsPeer, Hello | None]:
        """Upgrade, then wait for a valid ``hello``; on failure send an error, close, and
        return no hello (the handler then returns the closed WebSocket response)."""
        ws = InlineWebSocketResponse(
            max_msg_size=MAX_FRAME_BYTES, autoping=True, heartbeat=None, compress=False
        )
        await ws.prepare(request)
        # Any loop's transport (uvloop's do not subclass asyncio.Transport).
        peer = WsPeer(ws, channel, request.transport)
        peer.claims = claims
        peer.expires_at = claims.expires_at
        try:
            first = await ws.receive(timeout=HELLO_TIMEOUT)
        except TimeoutError:
            await peer.fail(
                ErrorCode.UNEXPECTED_MESSAGE, "no hello within 10 s", CloseCode.PROTOCOL_ERROR
            )
            return peer, None
        if first.type != aiohttp.WSMsgType.TEXT:
            if first.type == aiohttp.WSMsgType.BINARY:
                await peer.fail(
                    ErrorCode.UNEXPECTED_MESSAGE,
                    "the first message must be hello",
                    CloseCode.PROTOCOL_ERROR,
                )
            return peer, None
        try:
            hello = decode_message(first.data, channel=channel, sender="client")
            if not isinstance(hello, Hello):
                raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "the first message must be hello")
            check_version(hello.protocol)
        except ProtocolError as exc:
            close = (
                CloseCode.UNSUPPORTED_VERSION
                if exc.code == ErrorCode.UNSUPPORTED_VERSION
                else CloseCode.PROTOCOL_ERROR
            )
            await peer.fail(exc.code, exc.message, close)
            return peer, None
        if not self.tokens.verifies(claims.kid):
            # The signing key was revoked while this socket waited for its hello.
            await peer.fail(
                ErrorCode.TOKEN_INVALID,
                "the token's signing key was revoked; reconnect with a fresh token",
                CloseCode.UNAUTHORIZED,
            )
            return peer, None
        peer.heartbeat_interval = hello.heartbeat_interval
        peer.last_rx = time.monotonic()
        self._peers.add(peer)
        return peer, hello

    async def presence(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        async with self._connection_slot(claims):
            return await self._presence(request, claims)

    async def _presence(self, request: web.Request, claims: Claims) -> web.StreamResponse:
        peer, hello = await self._open_ws(request, Channel.PRESENCE, claims)
        if hello is None:
            return peer.ws
        session = self.core.open_session(claims, peer, hello.heartbeat_interval)
        fields = {
            "session": session.session_id,
            "account": claims.account_id,
            "operator": claims.operator_ref,
        }
        log.info(
            "operator online: %s/%s session %s",
            claims.account_id,
            claims.operator_ref,
            session.session_id,
            extra={"event": "operator_online", **fields},
        )
        try:
            await peer.send(
                Welcome(
                    protocol=PROTOCOL_VERSION,
                    session_id=session.session_id,
                    account_id=claims.account_id,
                    operator_ref=claims.operator_ref,
                    display_name=claims.display_name,
                    heartbeat_interval=hello.heartbeat_interval,
                    server_time=utc_iso(time.time()),
                    expires_at=utc_iso(claims.expires_at),
                )
            )
            await self._read_loop(
                peer, Channel.PRESENCE, lambda m: self._on_presence(session, peer, m)
            )
        except ConnectionError:
            pass
        finally:
            self._peers.discard(peer)
            await self.core.close_session(session)
            reason = _close_reason(peer.ws.close_code)
            log.info(
                "operator offline: %s/%s session %s (%s)",
                claims.account_id,
                claims.operator_ref,
                session.session_id,
                reason,
                extra={"event": "operator_offline", "reason": reason, **fields},
            )
        return peer.ws

    async def _on_presence(self, session: OperatorSession, peer: WsPeer, message: Message) -> None:
        if isinstance(message, Ping):
            await peer.send(Pong(ts=message.ts, server_time=utc_iso(time.time())))
        elif isinstance(message, UpdateToken):
            session.claims = self._replace_token(peer, message)
            await peer.send(Ack(reply_to=message.id))
        else:
            await self.core.handle_presence(session, message)

    def _replace_token(self, peer: WsPeer, message: UpdateToken) -> Claims:
        claims = self.tokens.verify(message.token)
        if not self.store.account_exists(claims.account_id):
            raise ProtocolError(ErrorCode.TOKEN_INVALID, "the token's account no longer exists")
        old = peer.claims
        assert old is not None
        if (claims.account_id, claims.operator_ref) != (old.account_id, old.operator_ref):
            raise ProtocolError(ErrorCode.FORBIDDEN, "the new token is for another operator")
        peer.claims = claims
        peer.expires_at = claims.expires_at
        return claims

    async def media(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        call = self.core.check_media_access(claims, request.match_info["call_sid"])
        async with self._connection_slot(claims):
            return await self._media(request, claims, call)

    async def _media(
        self, request: web.Request, claims: Claims, call: CoreCall
    ) -> web.StreamResponse:
        sid = call.sid
        peer, hello = await self._open_ws(request, Channel.MEDIA, claims)
        if hello is None:
            return peer.ws
        leg: MediaLeg | None = None
        fields = {"call_sid": sid, "account": claims.account_id, "operator": claims.operator_ref}
        try:
            leg = await self.core.attach_media(call, claims, peer, hello.codecs)
            log.info(
                "media leg open: call %s codec %s",
                sid,
                leg.codec.value,
                extra={"event": "media_open", "codec": leg.codec.value, **fields},
            )
            set_inline_handler(peer.ws, self._inline_audio(peer, leg))
            await self._read_loop(peer, Channel.MEDIA, lambda m: self._on_media(leg, peer, m), leg)
        except ProtocolError as exc:
            await peer.fail(exc.code, exc.message, CloseCode.PROTOCOL_ERROR)
        except ConnectionError:
            pass
        finally:
            set_inline_handler(peer.ws, None)
            self._peers.discard(peer)
            if leg is not None:
                await self.core.detach_media(leg)
                reason = _close_reason(peer.ws.close_code)
                log.info(
                    "media leg closed: call %s (%s), %d frames in, %d out, %d dropped",
                    sid,
                    reason,
                    leg.frames_in,
                    leg.frames_out,
                    peer.audio_dropped,
                    extra={
                        "event": "media_closed",
                        "reason": reason,
                        "frames_in": leg.frames_in,
                        "frames_out": leg.frames_out,
                        "frames_dropped": peer.audio_dropped,
                        **fields,
                    },
                )
        return peer.ws

    async def _on_media(self, leg: MediaLeg | None, peer: WsPeer, message: Message) -> None:
        assert leg is not None
        if isinstance(message, Ping):
            await peer.send(Pong(ts=message.ts, server_time=utc_iso(time.time())))
        elif isinstance(message, Mute):
            leg.muted = message.muted
        elif isinstance(message, Dtmf):
            await self.core.media_dtmf(leg, message.digits)
        elif isinstance(message, Hangup):
            claims = peer.claims
            assert claims is not None
            await self.core.hangup(claims, message.call_sid)
            await peer.send(Ack(reply_to=message.id))
        elif isinstance(message, UpdateToken):
            leg.claims = self._replace_token(peer, message)
            await peer.send(Ack(reply_to=message.id))
        elif isinstance(message, SendMessage):
            await self.core.deliver_message(leg.claims, message)
            await peer.send(Ack(reply_to=message.id))
        else:
            raise ProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE, f"{type(message).__name__} is not valid here"
            )

    def _inline_audio(self, peer: WsPeer, leg: MediaLeg) -> Callable[[bytes], bool]:
        """The relay's hot path (50 frames a second per leg), run as each binary message is
        parsed: a valid audio frame goes straight to the call; anything else is left to
        :meth:`_read_loop`, which reports it."""
        media_audio, monotonic = self.core.media_audio, time.monotonic

        def on_binary(data: bytes) -> bool:
            payload = audio_payload(data)
            if payload is None:
                return False
            peer.last_rx = monotonic()
            peer.invalid_in_a_row = 0
            media_audio(leg, payload)
            return True

        return on_binary

    async def _read_loop(
        self,
        peer: WsPeer,
        channel: Channel,
        on_message: Callable[[Message], Awaitable[None]],
        leg: MediaLeg | None = None,
    ) -> None:
        """Every message :meth:`_inline_audio` did not take (all of them where aiohttp
        offers no inline hook), in order."""
        binary, text = aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT
        async for raw in peer.ws:
            peer.last_rx = time.monotonic()
            try:
                if raw.type == text:
                    await on_message(decode_message(raw.data, channel=channel, sender="client"))
                elif raw.type == binary:
                    if leg is None:
                        raise ProtocolError(
                            ErrorCode.UNEXPECTED_MESSAGE,
                            "binary frames are only valid on media legs",
                        )
                    payload = audio_payload(raw.data)  # the fast path for a valid frame
                    if payload is None:
                        payload = decode_audio_frame(raw.data).payload  # raises the reason
                    self.core.media_audio(leg, payload)
                else:
                    break
                peer.invalid_in_a_row = 0
            except ProtocolError as exc:
                peer.invalid_in_a_row += 1
                reply = request_id_of(raw.data) if raw.type == text else None
                await peer.send(Error(code=exc.code.value, message=exc.message, reply_to=reply))
                if peer.invalid_in_a_row >= MAX_CONSECUTIVE_ERRORS:
                    await peer.close(CloseCode.PROTOCOL_ERROR, "too many invalid messages")
                    break


def _query_bool(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name} must be true or false")


def _row_fields(row: CallRow) -> dict[str, Any]:
    """The fields a call record and a call summary share."""
    return {
        "call_sid": row.call_sid,
        "account_id": row.account_id,
        "direction": row.direction,
        "from_": row.from_number,
        "to": row.to_number,
        "status": row.status,
        "end_reason": row.end_reason,
        "end_message": row.end_message,
        "operator_ref": row.operator_ref,
        "created_at": row.created_at,
        "answered_at": row.answered_at,
        "ended_at": row.ended_at,
    }


def _summary(row: CallRow) -> api.CallSummary:
    return api.CallSummary(**_row_fields(row))


def _close_reason(code: int | None) -> str:
    """A WebSocket close code as a word for the logs."""
    if code is None:
        return "connection lost"
    try:
        return f"close {code} {CloseCode(code).name.lower()}"
    except ValueError:
        return f"close {code}"
