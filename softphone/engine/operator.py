"""The operator SDK: presence, availability, dialling and offers over protocol v1.

Modelled on the seed SDK (``AudinOperator``), named the Python way::

    op = Operator("http://127.0.0.1:8765", get_token)
    numbers = await op.list_phone_numbers()
    await op.go_online([numbers[0].id])
    call = await op.dial("+15550100", caller_id=numbers[0].phone_number)
    ...
    await call.hangup()
    await op.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, overload

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from softphone.engine.audio import AudioManager
from softphone.engine.call import AudioFactory, Call
from softphone.engine.errors import ClientErrorCode, OperatorError
from softphone.engine.events import EventEmitter
from softphone.engine.states import PRESENCE_TRANSITIONS, CallState, PresenceState, StateMachine
from softphone.engine.tokens import (
    GetToken,
    TokenInfo,
    TokenResult,
    parse_expiry,
    redact,
    to_token_info,
    token_url_provider,
)
from softphone.engine.transport import (
    connect_ws,
    http_base,
    is_certificate_error,
    tls_context,
    untrusted,
    ws_url,
)
from softphone.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Availability,
    CallAnswered,
    CallCreated,
    CallEnded,
    CallMessage,
    CallOffer,
    CallRinging,
    Channel,
    CloseCode,
    Dial,
    Direction,
    EndReason,
    Error,
    ErrorCode,
    Hello,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Reject,
    SetAvailability,
    UpdateToken,
    Welcome,
    decode_message,
    encode_message,
    validate_e164,
)
from softphone.protocol import http as api

if TYPE_CHECKING:
    from softphone.media.devices import DevicesChange

log = logging.getLogger("audin.sdk")

DEFAULT_BACKOFF: Final = (1.0, 2.0, 5.0, 10.0, 30.0)

EventName = Literal[
    "presence_state_changed",
    "availability_changed",
    "incoming_call",
    "call_started",
    "call_ended",
    "call_reconnecting",
    "call_reconnected",
    "devices_changed",
    "token_will_expire",
    "error",
]


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    id: str
    phone_number: str
    display_name: str


@dataclass(frozen=True, slots=True)
class AvailabilityResult:
    """Numbers the core confirmed (``accepted``) and refused (``rejected``)."""

    accepted: tuple[str, ...]
    rejected: tuple[str, ...]


class Operator:
    """One operator's connection to an audin core: presence, availability, calls."""

    def __init__(
        self,
        core_url: str | Sequence[str],
        get_token: GetToken | str,
        *,
        heartbeat_interval: float = 25.0,
        reconnect_backoff: Sequence[float] = DEFAULT_BACKOFF,
        audio: AudioManager | AudioFactory | Literal["pyaudio", "null"] = "pyaudio",
        request_timeout: float = 10.0,
        token_refresh_margin: float = 10.0,
        codec_preferences: Sequence[str] = ("PCMU", "PCMA"),
        media_reconnect_window: float = 10.0,
        close_protection: bool = False,
        ca_file: str | Path | None = None,
        audio_device_lost: Literal["continue", "hangup"] = "continue",
        client_name: str = "audin-phone",
        logger: logging.Logger | None = None,
    ) -> None:
        urls = [core_url] if isinstance(core_url, str) else list(core_url)
        if not urls:
            raise ValueError("core_url needs at least one URL")
        self.edges: tuple[str, ...] = tuple(http_base(u) for u in urls)
        """The cores to use, in order of preference (the seed's ``edge``)."""
        self.core_url = self.edges[0]
        """The core in use now (``home``); media legs and HTTP requests go there."""
        self._get_token: GetToken = (
            token_url_provider(get_token) if isinstance(get_token, str) else get_token
        )
        if token_refresh_margin < 0:
            raise ValueError("token_refresh_margin must be >= 0")
        self.token_refresh_margin = float(token_refresh_margin)
        unknown = [c for c in codec_preferences if c not in ("PCMU", "PCMA")]
        if unknown or not codec_preferences:
            raise ValueError(f"codec_preferences must name PCMU and/or PCMA, got {unknown}")
        self.codec_preferences = tuple(codec_preferences)
        if media_reconnect_window <= 0:
            raise ValueError("media_reconnect_window must be > 0 seconds")
        self.media_reconnect_window = float(media_reconnect_window)
        """Seconds a call may spend re-opening a dropped media leg before it ends ``failed``."""
        self.close_protection = close_protection
        if audio_device_lost not in ("continue", "hangup"):
            raise ValueError("audio_device_lost must be 'continue' or 'hangup'")
        self.audio_device_lost = audio_device_lost
        """What a call does when its sound card stops: go on (re-opened, or silent until
        another device is picked) or hang up (``failed``). Either way an error is emitted."""
        self.tls = tls_context(ca_file)
        """Verifies the core's certificate on https/wss (system CAs, or ``ca_file``)."""
        """When true, ``close()`` refuses while a call is live (``close(force=True)`` wins)."""
        self._refresher: asyncio.Task[None] | None = None
        self._earliest_expiry: datetime | None = None
        if heartbeat_interval < 1:
            raise ValueError("heartbeat_interval must be at least 1 second")
        if not reconnect_backoff or any(d < 0 for d in reconnect_backoff):
            raise ValueError("reconnect_backoff must be a non-empty list of delays >= 0")
        self.heartbeat_interval = float(heartbeat_interval)
        self.reconnect_backoff = tuple(float(d) for d in reconnect_backoff)
        self.request_timeout = request_timeout
        self.client_name = client_name
        self._log = logger or log
        self._events = EventEmitter(self._log)
        if isinstance(audio, AudioManager):
            self.audio = audio
        elif isinstance(audio, str):
            self.audio = AudioManager(backend=audio)
        else:
            self.audio = AudioManager(device_factory=audio)
        self.audio._emit = self._events.emit
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sm: StateMachine[PresenceState] = StateMachine(
            PresenceState.OFFLINE, PRESENCE_TRANSITIONS
        )
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._dialling: set[str] = set()  # ids of dial requests waiting for call_created
        self._calls: dict[str, Call] = {}
        self._wanted: list[str] | None = None
        self._availability = AvailabilityResult((), ())
        self._token: TokenInfo | None = None
        self._welcome: Welcome | None = None
        self._ids = itertools.count(1)
        self._connect_lock = asyncio.Lock()
        self._last_rx = 0.0
        self.rtt_ms: float | None = None

    # ------------------------------------------------------------------ accessors

    @property
    def state(self) -> PresenceState:
        return self._sm.state

    @property
    def current_call(self) -> Call | None:
        for call in self._calls.values():
            if call.state not in (CallState.PENDING, CallState.ENDED):
                return call
        return None

    @property
    def is_busy(self) -> bool:
        return self.current_call is not None

    @property
    def calls(self) -> list[Call]:
        return list(self._calls.values())

    @property
    def availability(self) -> AvailabilityResult:
        return self._availability

    @property
    def identity(self) -> str | None:
        """The operator's identity (``operatorRef``) as the core confirmed it."""
        return self._welcome.operator_ref if self._welcome else None

    @property
    def account_id(self) -> str | None:
        return self._welcome.account_id if self._welcome else None

    @property
    def home(self) -> str:
        """The core serving this operator (one of ``edges``)."""
        return self.core_url

    def _edge_order(self) -> list[str]:
        """Edges to try: the preferred order, so the first reachable one becomes home."""
        return list(self.edges)

    @property
    def log_level(self) -> int:
        """Verbosity of the SDK's logger (``logging`` levels); never logs tokens."""
        return self._log.getEffectiveLevel()

    @log_level.setter
    def log_level(self, level: int | str) -> None:
        self._log.setLevel(level)

    @staticmethod
    def is_supported() -> bool:
        """True when this machine can run calls with sound: PortAudio (PyAudio) loads. The
        SDK itself runs anywhere Python 3.11 does; without PortAudio, use file or silent
        audio."""
        from softphone.media.devices import load_pyaudio

        try:
            load_pyaudio()
        except Exception:
            return False
        return True

    async def disconnect_all(self) -> None:
        """Hang up every call (pending offers are rejected); presence stays as it is."""
        for call in list(self._calls.values()):
            with contextlib.suppress(OperatorError):
                await call.hangup()

    # ------------------------------------------------------------------ events

    @overload
    def on(
        self, event: Literal["presence_state_changed"], listener: Callable[[PresenceState], Any]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["availability_changed"], listener: Callable[[AvailabilityResult], Any]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self,
        event: Literal[
            "incoming_call", "call_started", "call_ended", "call_reconnecting", "call_reconnected"
        ],
        listener: Callable[[Call], Any],
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["error"], listener: Callable[[OperatorError], Any]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["token_will_expire"], listener: Callable[[float], Any]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["devices_changed"], listener: Callable[[DevicesChange], Any]
    ) -> Callable[[], None]: ...
    def on(self, event: EventName, listener: Callable[[Any], Any]) -> Callable[[], None]:
        """Subscribe; returns a callable that unsubscribes. Listeners may be sync or async."""
        return self._events.on(event, listener)

    def once(self, event: EventName, listener: Callable[[Any], Any]) -> Callable[[], None]:
        return self._events.once(event, listener)

    def off(self, event: EventName, listener: Callable[[Any], Any]) -> None:
        self._events.off(event, listener)

    def _emit(self, event: EventName, *args: Any) -> None:
        self._events.emit(event, *args)

    def _emit_error(self, error: OperatorError) -> None:
        self._log.warning("error %s: %s", error.code, error.message)
        self._events.emit("error", error)

    def _set_state(self, new: PresenceState) -> None:
        if self._sm.state == new:
            return
        self._sm.go(new)
        self._log.info("presence %s", new.value)
        self._events.emit("presence_state_changed", new)

    # ------------------------------------------------------------------ tokens and HTTP

    async def _fresh_token(self) -> TokenInfo:
        """Call ``get_token`` (always a new token, as the seed SDK does)."""
        try:
            async with asyncio.timeout(self.request_timeout):
                result = await self._get_token()
            info = to_token_info(result)
        except TimeoutError as exc:
            error = OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED,
                f"get_token gave no token within {self.request_timeout:g} s",
                exc,
            )
            self._emit_error(error)
            raise error from None
        except OperatorError as exc:
            self._emit_error(exc)
            raise
        except Exception as exc:
            error = OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED, f"get_token failed: {exc}", exc
            )
            self._emit_error(error)
            raise error from exc
        self._token = info
        self._note_expiry(info)
        self._log.debug("token fetched %s", redact(info.token))
        return info

    @property
    def token_expires_at(self) -> datetime | None:
        """When the first token in use expires (None before connecting or if unknown); the
        SDK renews it ``token_refresh_margin`` seconds before."""
        return self._earliest_expiry

    @property
    def token(self) -> str | None:
        """The last session token, redacted (the SDK never hands the raw token out)."""
        return redact(self._token.token) if self._token else None

    async def update_token(self, token: TokenResult) -> None:
        """Replace the session token on every open WebSocket (for callers who manage
        tokens themselves; the SDK also does this by itself before expiry)."""
        info = to_token_info(token)
        self._token = info
        self._earliest_expiry = info.expires_at  # every socket gets this token now
        ws = self._ws
        if ws is not None:
            await self._request(UpdateToken(id=self._next_id(), token=info.token))
        call = self.current_call
        if call is not None:
            await call._update_token(info.token)

    async def _refresh_tokens(self) -> None:
        """``token_will_expire`` a margin before expiry, then a fresh token for every socket;
        a failing ``get_token`` is retried with backoff until the token runs out."""
        backoff = (1.0, 2.0, 5.0, 10.0, 30.0)
        while True:
            left = self._token_left()
            if left is None:
                return  # no expiry known: nothing to schedule
            await asyncio.sleep(max(0.0, left - self.token_refresh_margin))
            self._emit("token_will_expire", max(0.0, self._token_left() or 0.0))
            attempt = 0
            while True:
                try:
                    fresh = await self._fresh_token()
                    await self.update_token(fresh)
                    break
                except OperatorError as exc:
                    if exc.code not in (ClientErrorCode.TOKEN_FETCH_FAILED,):
                        self._emit_error(exc)
                    remaining = self._token_left() or 0.0
                    if remaining <= 0 or self._ws is None:
                        return  # the core closes with 4001; reconnecting fetches a new one
                    delay = backoff[min(attempt, len(backoff) - 1)]
                    attempt += 1
                    await asyncio.sleep(min(delay, max(0.1, remaining - 0.5)))

    def _note_expiry(self, info: TokenInfo) -> None:
        """Track the earliest expiry among the tokens the open sockets use."""
        if info.expires_at is not None and (
            self._earliest_expiry is None or info.expires_at < self._earliest_expiry
        ):
            self._earliest_expiry = info.expires_at

    def _token_left(self) -> float | None:
        """Seconds until the first token in use expires (None: no expiry known)."""
        if self._earliest_expiry is None:
            return None
        return (self._earliest_expiry - datetime.now(UTC)).total_seconds()

    async def list_phone_numbers(self) -> list[PhoneNumber]:
        """Numbers this operator may use. Retries once with a fresh token on HTTP 401."""
        token = self._token if self._token is not None else await self._fresh_token()
        for attempt in range(2):
            response = await self._get_numbers(token)
            if response.status_code == 401:
                if attempt == 0:
                    token = await self._fresh_token()
                    continue
                detail = api.parse_error_body(response.content)
                raise OperatorError(
                    ClientErrorCode.UNAUTHORIZED,
                    detail.message if detail else "the core refused the session token",
                )
            if response.is_error:
                detail = api.parse_error_body(response.content)
                raise OperatorError(
                    ClientErrorCode.REQUEST_FAILED,
                    f"HTTP {response.status_code}: {detail.message if detail else response.text}",
                )
            try:
                body = api.decode_body(response.content, api.PhoneNumberList)
            except ProtocolError as exc:
                raise OperatorError(ClientErrorCode.REQUEST_FAILED, exc.message, exc) from exc
            return [PhoneNumber(n.id, n.phone_number, n.display_name) for n in body.phone_numbers]
        raise AssertionError("unreachable")

    async def _get_numbers(self, token: TokenInfo) -> httpx.Response:
        """GET the number list from home, failing over to the other edges if unreachable."""
        order = [self.core_url, *(e for e in self._edge_order() if e != self.core_url)]
        failure: Exception | None = None
        for base in order:
            url = base + api.PHONE_NUMBERS_PATH
            try:
                client = httpx.AsyncClient(timeout=self.request_timeout, verify=self.tls)
                async with client:
                    response = await client.get(
                        url, headers={"Authorization": f"Bearer {token.token}"}
                    )
            except httpx.HTTPError as exc:
                if is_certificate_error(exc):
                    raise untrusted(url, exc) from None
                failure = exc
                continue
            if self._ws is None:
                self.core_url = base
            return response
        raise OperatorError(
            ClientErrorCode.REQUEST_FAILED,
            f"cannot list numbers at {', '.join(order)}: {failure}",
            failure,
        )

    # ------------------------------------------------------------------ presence

    async def go_online(self, phone_number_ids: Sequence[str]) -> AvailabilityResult:
        """Connect (if needed) and be online on exactly these numbers. Call again to change."""
        self._check_alive()
        self._wanted = list(phone_number_ids)
        if self._ws is not None and self.state == PresenceState.ONLINE:
            return await self._announce()
        await self._ensure_connected()
        return self._availability

    async def go_offline(self) -> None:
        """End any active call (reason ``offline``), close presence, stop reconnecting."""
        self._wanted = None
        if self._reconnector is not None:
            self._reconnector.cancel()
            self._reconnector = None
        for call in list(self._calls.values()):
            if call.state == CallState.PENDING:
                await call._finish(EndReason.OFFLINE, "went offline")
            elif not call.is_ended:
                with contextlib.suppress(OperatorError):
                    await call._hang_up(EndReason.OFFLINE, "went offline")
                await call._finish(EndReason.OFFLINE, "went offline")
        await self._disconnect()
        self._earliest_expiry = None  # no socket uses a token any more
        if self.state in (
            PresenceState.CONNECTING,
            PresenceState.ONLINE,
            PresenceState.RECONNECTING,
        ):
            self._set_state(PresenceState.OFFLINE)

    async def close(self, *, force: bool = False) -> None:
        """Go offline, end everything, remove listeners; the operator is then destroyed.

        With ``close_protection`` on, a live call makes this raise ``CALL_IN_PROGRESS``
        instead (the seed's close protection); ``force=True`` closes anyway."""
        if self.state == PresenceState.DESTROYED:
            return
        if self.close_protection and not force and self.current_call is not None:
            raise OperatorError(
                ClientErrorCode.CALL_IN_PROGRESS,
                f"a call is in progress ({self.current_call.call_sid}); hang up first, or"
                " close(force=True)",
            )
        await self.go_offline()
        if self._tasks:  # ringtone starts and stops still in flight
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.audio.close()
        self._set_state(PresenceState.DESTROYED)
        await self._events.drain()
        self._events.clear()

    async def __aenter__(self) -> Operator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(force=True)

    def _check_alive(self) -> None:
        if self.state == PresenceState.DESTROYED:
            raise OperatorError(ClientErrorCode.DESTROYED, "this Operator was closed")

    async def _ensure_connected(self) -> None:
        async with self._connect_lock:
            if self._ws is not None and self.state == PresenceState.ONLINE:
                return
            if self._reconnector is not None and not self._reconnector.done():
                self._reconnector.cancel()
                self._reconnector = None
            if self.state != PresenceState.RECONNECTING:
                self._set_state(PresenceState.CONNECTING)
            try:
                await self._establish()
            except OperatorError as exc:
                if exc.code != ClientErrorCode.TOKEN_FETCH_FAILED:  # that one was emitted
                    self._emit_error(exc)
                if self.state == PresenceState.CONNECTING:
                    self._set_state(PresenceState.OFFLINE)
                raise

    async def _establish(self) -> None:
        """Connect, say hello, restore availability, go online."""
        token = await self._fresh_token()
        ws = await self._connect_edge(token)
        try:
            await ws.send(
                encode_message(
                    Hello(
                        protocol=PROTOCOL_VERSION,
                        client=self.client_name,
                        heartbeat_interval=self.heartbeat_interval,
                    )
                )
            )
            raw = await asyncio.wait_for(ws.recv(), self.request_timeout)
            first = decode_message(raw, channel=Channel.PRESENCE, sender="core")
        except ProtocolError as exc:
            await ws.close()
            raise OperatorError(exc.code, exc.message, exc) from exc
        except (TimeoutError, websockets.ConnectionClosed) as exc:
            await ws.close()
            raise OperatorError(
                ClientErrorCode.CONNECTION_FAILED, f"no welcome from the core: {exc}", exc
            ) from exc
        if isinstance(first, Error):
            await ws.close()
            raise OperatorError(first.code, first.message)
        if not isinstance(first, Welcome):
            await ws.close()
            raise OperatorError(
                ClientErrorCode.PROTOCOL_VIOLATION, f"expected welcome, got {type(first).__name__}"
            )
        self._welcome = first
        if token.expires_at is None:  # get_token gave no expiry: the core's word for it
            with contextlib.suppress(ValueError):
                self._token = TokenInfo(token.token, parse_expiry(first.expires_at))
                self._note_expiry(self._token)
        self._ws = ws
        self._last_rx = time.monotonic()
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read(ws), name="presence-reader")
        self._heartbeat = loop.create_task(self._beat(ws), name="presence-heartbeat")
        if self._wanted is not None:
            await self._announce()
        self._set_state(PresenceState.ONLINE)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_tokens(), name="token-refresher"
            )

    async def _connect_edge(self, token: TokenInfo) -> ClientConnection:
        """Open presence on the first reachable edge, in order; it becomes ``home``. Only
        unreachable edges are skipped: a refusal (bad token, wrong version) is final."""
        unreachable = (ClientErrorCode.CONNECTION_FAILED, ClientErrorCode.TIMEOUT)
        last: OperatorError | None = None
        for base in self._edge_order():
            try:
                ws = await connect_ws(
                    ws_url(base, api.PRESENCE_PATH),
                    token.token,
                    timeout=self.request_timeout,
                    tls=self.tls,
                )
            except OperatorError as exc:
                if exc.code not in unreachable:
                    raise
                last = exc
                if len(self.edges) > 1:
                    self._log.info("edge %s unreachable: %s", base, exc.message)
                continue
            if base != self.core_url:
                self._log.info("home is now %s", base)
            self.core_url = base
            return ws
        assert last is not None
        raise last

    async def _announce(self) -> AvailabilityResult:
        wanted = list(self._wanted or [])
        reply = await self._request(SetAvailability(id=self._next_id(), phone_number_ids=wanted))
        assert isinstance(reply, Availability)
        self._availability = AvailabilityResult(tuple(reply.accepted), tuple(reply.rejected))
        self._emit("availability_changed", self._availability)
        return self._availability

    async def _disconnect(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None and refresher is not asyncio.current_task():
            refresher.cancel()
        ws, self._ws = self._ws, None
        for task in (self._heartbeat, self._reader):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (self._heartbeat, self._reader):
            if task is not None and task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._heartbeat = self._reader = None
        self._fail_pending(OperatorError(ClientErrorCode.CONNECTION_LOST, "presence closed"))

    def _fail_pending(self, error: OperatorError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)

    async def _read(self, ws: ClientConnection) -> None:
        close_code: int | None = None
        try:
            async for raw in ws:
                self._last_rx = time.monotonic()
                if isinstance(raw, bytes):
                    self._emit_error(
                        OperatorError(
                            ClientErrorCode.PROTOCOL_VIOLATION, "binary frame on presence"
                        )
                    )
                    continue
                try:
                    message = decode_message(raw, channel=Channel.PRESENCE, sender="core")
                except ProtocolError as exc:
                    self._emit_error(OperatorError(exc.code, f"from the core: {exc.message}"))
                    continue
                await self._dispatch(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            close_code = ws.close_code
        if self._ws is ws:
            await self._connection_lost(close_code)

    async def _connection_lost(self, close_code: int | None) -> None:
        self._ws = None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._fail_pending(
            OperatorError(ClientErrorCode.CONNECTION_LOST, "presence connection lost")
        )
        if close_code in (CloseCode.UNSUPPORTED_VERSION, CloseCode.PROTOCOL_ERROR):
            # Reconnecting would be refused the same way (docs/protocol.md, close codes).
            error = (
                OperatorError(ErrorCode.UNSUPPORTED_VERSION, "the core does not speak protocol v1")
                if close_code == CloseCode.UNSUPPORTED_VERSION
                else OperatorError(
                    ClientErrorCode.PROTOCOL_VIOLATION,
                    "the core closed presence for a protocol error (4000); not reconnecting",
                )
            )
            self._emit_error(error)
            if self.state in (PresenceState.ONLINE, PresenceState.RECONNECTING):
                self._set_state(PresenceState.OFFLINE)
            return
        if self._wanted is None or self.state != PresenceState.ONLINE:
            return
        self._emit_error(
            OperatorError(
                ClientErrorCode.CONNECTION_LOST,
                f"presence connection lost (close code {close_code}); reconnecting",
            )
        )
        self._set_state(PresenceState.RECONNECTING)
        self._reconnector = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        for attempt in itertools.count():
            delay = self.reconnect_backoff[min(attempt, len(self.reconnect_backoff) - 1)]
            await asyncio.sleep(delay)
            if self._wanted is None:
                return
            try:
                async with self._connect_lock:
                    await self._establish()
                return
            except OperatorError as exc:
                self._log.info("reconnect attempt %d failed: %s", attempt + 1, exc.code)
                if exc.code not in (ClientErrorCode.TOKEN_FETCH_FAILED,):
                    self._emit_error(exc)

    async def _beat(self, ws: ClientConnection) -> None:
        """A ``ping`` every interval; the link is dead once nothing (pong or anything else)
        arrived for two intervals: it is aborted and the reader starts reconnecting."""
        interval = self.heartbeat_interval
        next_ping = time.monotonic() + interval
        while True:
            dead_at = self._last_rx + 2 * interval
            await asyncio.sleep(max(0.0, min(next_ping, dead_at) - time.monotonic()))
            now = time.monotonic()
            if now - self._last_rx >= 2 * interval:
                self._log.warning("no traffic for %.0f s: presence link is dead", 2 * interval)
                ws.transport.abort()
                return
            if now >= next_ping:
                next_ping = now + interval
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(encode_message(Ping(ts=time.monotonic())))

    def _next_id(self) -> str:
        return f"r{next(self._ids)}"

    async def _request(self, message: Message) -> Message:
        """Send a request on presence and wait for its reply (raises OperatorError)."""
        ws = self._ws
        if ws is None:
            raise OperatorError(ClientErrorCode.CONNECTION_LOST, "not connected to the core")
        rid = getattr(message, "id")  # noqa: B009 (every request has one)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await ws.send(encode_message(message))
            return await asyncio.wait_for(fut, self.request_timeout)
        except TimeoutError:
            raise OperatorError(
                ClientErrorCode.TIMEOUT, f"no answer to {type(message).__name__} in time"
            ) from None
        except websockets.ConnectionClosed as exc:
            raise OperatorError(ClientErrorCode.CONNECTION_LOST, "connection lost", exc) from exc
        finally:
            self._pending.pop(rid, None)

    # ------------------------------------------------------------------ inbound messages

    async def _dispatch(self, message: Message) -> None:
        reply_to = getattr(message, "reply_to", None)
        if reply_to is not None and isinstance(message, Availability | CallCreated | Ack | Error):
            fut = self._pending.get(reply_to)
            if fut is not None and not fut.done():
                if isinstance(message, CallCreated) and reply_to in self._dialling:
                    self._register_outbound(message)
                if isinstance(message, Error):
                    fut.set_exception(OperatorError(message.code, message.message))
                else:
                    fut.set_result(message)
            return
        match message:
            case Error():
                self._emit_error(OperatorError(message.code, message.message))
            case Availability():
                self._availability = AvailabilityResult(
                    tuple(message.accepted), tuple(message.rejected)
                )
                self._emit("availability_changed", self._availability)
            case CallOffer():
                await self._on_offer(message)
            case CallRinging():
                if (call := self._calls.get(message.call_sid)) is not None:
                    call._on_ringing(message.early_media)
            case CallAnswered():
                if (call := self._calls.get(message.call_sid)) is not None:
                    call._on_answered()
            case CallEnded():
                if (call := self._calls.get(message.call_sid)) is not None:
                    await call._finish(message.reason, message.message)
            case CallMessage():
                if (call := self._calls.get(message.call_sid)) is not None:
                    call._emit("message_received", message.content, message.content_type)
            case Pong():
                self.rtt_ms = max(0.0, time.monotonic() - message.ts) * 1000
            case _:
                self._log.debug("ignored %s", type(message).__name__)

    async def _on_offer(self, offer: CallOffer) -> None:
        if offer.call_sid in self._calls:
            return
        if self.is_busy:
            self._log.info("declining offer %s: busy", offer.call_sid)
            ws = self._ws
            if ws is not None:
                reject = Reject(id=self._next_id(), call_sid=offer.call_sid, reason="busy")
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(encode_message(reject))
            return
        call = Call(
            self,
            call_sid=offer.call_sid,
            direction=Direction.INBOUND,
            from_=offer.from_,
            to=offer.to,
            params=offer.params,
            phone_number_id=offer.phone_number_id,
            state=CallState.PENDING,
        )
        self._calls[call.call_sid] = call
        self._emit("incoming_call", call)
        if call.state == CallState.PENDING:
            self._spawn(self.audio.start_ringing("ringtone"))

    # ------------------------------------------------------------------ outbound

    async def dial(
        self,
        to: str,
        *,
        caller_id: str | None = None,
        params: dict[str, str] | None = None,
    ) -> Call:
        """Place an outbound call; returns once the core created it and media is opening."""
        self._check_alive()
        try:
            validate_e164(to)
            if caller_id is not None:
                validate_e164(caller_id)
        except ProtocolError as exc:
            raise OperatorError(exc.code, exc.message) from None
        if self.is_busy:
            raise OperatorError(ErrorCode.BUSY, "a call is already active; hang it up first")
        await self._ensure_connected()
        request = Dial(id=self._next_id(), to=to, caller_id=caller_id, params=dict(params or {}))
        self._dialling.add(request.id)
        try:
            reply = await self._request(request)
        finally:
            self._dialling.discard(request.id)
        assert isinstance(reply, CallCreated)
        call = self._calls[reply.call_sid]
        call._start_media()
        return call

    def _register_outbound(self, created: CallCreated) -> None:
        """Called by the reader as ``call_created`` arrives, so that the call's next messages
        (ringing, answered, ended), read before ``dial()`` resumes, find it."""
        call = Call(
            self,
            call_sid=created.call_sid,
            direction=Direction.OUTBOUND,
            from_=created.from_,
            to=created.to,
            params=created.params,
            phone_number_id=None,
            state=CallState.CONNECTING,
        )
        self._calls[call.call_sid] = call

    def _call_finished(self, call: Call) -> None:
        self._calls.pop(call.call_sid, None)
        if not any(c.state == CallState.PENDING for c in self._calls.values()):
            self._spawn(self.audio.stop_ringing())
        self._emit("call_ended", call)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a side task (sounds, a hang-up, a media leg's ping); its failure is logged,
        never raised into the caller."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._log.error("side task failed", exc_info=t.exception())

        task.add_done_callback(done)
