"""A call as the SDK sees it, and the driver of its media leg (audio over a WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from softphone.engine.errors import ClientErrorCode, OperatorError
from softphone.engine.events import EventEmitter
from softphone.engine.quality import QualityMonitor
from softphone.engine.states import CALL_TRANSITIONS, CallState, InvalidTransition, StateMachine
from softphone.media import (
    AudioDevice,
    AudioErrorCode,
    FlatInputDetector,
    NullAudioDevice,
    SpeakingWhileMuted,
    decode_mulaw,
    dtmf_sound,
    encode_mulaw,
)
from softphone.media.constants import FRAME_MS
from softphone.media.g711 import decode_alaw, encode_alaw
from softphone.protocol import (
    Accept,
    CallEnded,
    CallMessage,
    Channel,
    CloseCode,
    Codec,
    Direction,
    Dtmf,
    EndReason,
    Error,
    FeedbackIssue,
    Hangup,
    Hello,
    MediaReady,
    Mute,
    Ping,
    Pong,
    PostFeedback,
    ProtocolError,
    Reject,
    SendMessage,
    UpdateToken,
    decode_audio_frame,
    decode_message,
    encode_audio_frame,
    encode_message,
)
from softphone.protocol.frames import FRAME_SAMPLES, PAYLOAD_BYTES

if TYPE_CHECKING:
    from softphone.engine.operator import Operator

log = logging.getLogger("audin.sdk.call")

CallDirection = Direction
AudioFactory = Callable[["Call"], AudioDevice]
CallEvent = Literal[
    "ringing",
    "accepted",
    "muted",
    "volume",
    "warning",
    "warning_cleared",
    "reconnecting",
    "reconnected",
    "disconnected",
    "message_received",
    "message_sent",
    "cancelled",
    "rejected",
    "sample",
    "error",
]

_DTMF_MAX: Final = 64
_DTMF: Final = re.compile(rf"[0-9A-D*#w]{{1,{_DTMF_MAX}}}\Z")
_DTMF_TONE: Final = 0.160
_DTMF_GAP: Final = 0.070
_DTMF_PAUSE: Final = 0.500
_MULAW_SILENCE: Final = b"\xff" * PAYLOAD_BYTES
_ALAW_SILENCE: Final = b"\xd5" * PAYLOAD_BYTES
_FRAME_S: Final = FRAME_MS / 1000
_CAPTURE_MARGIN: Final = 0.002
"""The sender wakes this long after a captured frame is due (see :meth:`_next_wake`)."""
_SEND_POLL: Final = 0.010
"""Wake-up period while the device gives no capture timing (nothing captured yet)."""
_PING_EVERY: Final = 1.0
_LEVEL_EVERY: Final = 0.050
_MEDIA_SILENCE_LIMIT: Final = 3.0
"""Seconds without anything from the core (pongs come every second) before a media leg
is taken for dead and re-opened."""
_MEDIA_RECONNECT_DELAYS: Final = (0.2, 0.5, 1.0, 2.0)
"""Pauses between attempts to re-open a dropped media leg (the last one repeats), all within
the operator's ``media_reconnect_window``."""
_SEND_BACKLOG: Final = 4096
"""Bytes of a media leg's output that may wait in the transport (the kernel's socket buffer
is full by then) before audio frames are dropped instead of queued: about 20 frames,
0.4 s. A backlog beyond that is latency the operator's voice would never catch up on."""
_NO_REOPEN: Final = frozenset({CloseCode.PROTOCOL_ERROR, CloseCode.UNSUPPORTED_VERSION})
"""Close codes after which a media leg is not re-opened (docs/protocol.md, close codes)."""


def send_audio_frame(
    ws: ClientConnection, frame: bytes, backlog: int = _SEND_BACKLOG
) -> bool | None:
    """Put one audio frame on a media leg without waiting: True if it went out, False if
    it was dropped because more than ``backlog`` bytes already wait in the transport (the
    link is not keeping up: real-time audio is dropped rather than queued), None if the
    leg is no longer open.

    Through the connection's sans-I/O protocol and its transport: ``ws.send`` would wait
    for the transport to drain (seconds of audio queued on a stalled link before it
    pushes back) and costs a context manager and a drain per frame, 50 times a second."""
    protocol = ws.protocol
    if protocol.state is not State.OPEN:
        return None
    transport = ws.transport
    if transport.get_write_buffer_size() > backlog:
        return False
    protocol.send_binary(frame)
    for data in protocol.data_to_send():
        transport.write(data)
    return True


class MediaConnection(ClientConnection):
    """A media leg's WebSocket: complete binary messages (audio frames) go to ``on_audio``
    as the protocol parses them, inside the transport's receive callback, instead of
    through websockets' message queue and a task woken for each (50 a second); so they
    may overtake text messages still queued. Text messages and fragmented ones take the
    usual way (``recv`` / ``async for``).

    ``on_audio`` must not block or await, and must not raise."""

    on_audio: Callable[[bytes], None] | None = None

    def process_event(self, event: Event) -> None:
        on_audio = self.on_audio
        if (
            on_audio is not None
            and isinstance(event, Frame)
            and event.opcode is Opcode.BINARY
            and event.fin  # a whole message: the protocol allows no other inside a fragmented one
        ):
            on_audio(bytes(event.data))
            return
        super().process_event(event)


@dataclass(frozen=True, slots=True)
class CallStats:
    """What the media leg counted so far."""

    frames_sent: int
    frames_received: int
    frames_malformed: int
    frames_unsent: int  # microphone frames dropped: the link was not taking them
    rtt_ms: float | None
    rtt_median_ms: float | None
    device_capture_dropped: int
    device_playback_underruns: int
    device_playback_dropped: int


class Call:
    """One call. Created by ``Operator.dial`` (outbound) or offered (``incoming_call``)."""

    def __init__(
        self,
        operator: Operator,
        *,
        call_sid: str,
        direction: Direction,
        from_: str,
        to: str,
        params: dict[str, str],
        phone_number_id: str | None,
        state: CallState,
    ) -> None:
        self._operator = operator
        self.call_sid = call_sid
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.params = dict(params)
        self.phone_number_id = phone_number_id
        self._sm: StateMachine[CallState] = StateMachine(state, CALL_TRANSITIONS)
        self.end_reason: EndReason | None = None
        self.end_message = ""
        self._muted = False
        self.codec: str | None = None
        """The audio codec of the media leg (``PCMU``), known once media is ready."""
        self.account_id = operator.account_id
        self.created_at = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self._answered = False
        self._media_ready = False
        self._ended = asyncio.Event()
        self._finishing = False
        self._local_end: tuple[EndReason, str] | None = None
        self._started = asyncio.Event()
        self._media: _MediaLeg | None = None
        self._events = EventEmitter(log)
        self.warnings: set[str] = set()
        self.dtmf_sent = ""
        """Every DTMF digit sent in this call, in order."""

    def __repr__(self) -> str:
        return (
            f"Call({self.call_sid}, {self.direction.value}, {self.from_} -> {self.to},"
            f" {self.state.value})"
        )

    # ------------------------------------------------------------------ events

    def on(self, event: CallEvent, listener: Callable[..., Any]) -> Callable[[], None]:
        """Subscribe to a call event; returns a callable that unsubscribes.

        ``ringing`` (has_early_media), ``accepted``, ``muted`` (muted), ``volume`` (input,
        output levels 0..1, every 50 ms), ``warning`` / ``warning_cleared`` (name),
        ``reconnecting``, ``reconnected``, ``message_received`` and ``message_sent``
        (content, content_type), ``sample`` (CallSample, once a second), ``error``
        (OperatorError about this call; the operator's ``error`` gets it too), ``cancelled`` (the
        offer was ignored here or withdrawn, or an outbound call was hung up before an
        answer), ``rejected`` (the offer was rejected), then ``disconnected`` for every end.
        """
        return self._events.on(event, listener)

    def once(self, event: CallEvent, listener: Callable[..., Any]) -> Callable[[], None]:
        return self._events.once(event, listener)

    def off(self, event: CallEvent, listener: Callable[..., Any]) -> None:
        self._events.off(event, listener)

    def _emit(self, event: CallEvent, *args: Any) -> None:
        self._events.emit(event, *args)

    def _emit_error(self, error: OperatorError) -> None:
        """An error about this call: the call's ``error`` event, then the operator's."""
        self._events.emit("error", error)
        self._operator._emit_error(error)

    def _set_warning(self, name: str, active: bool) -> None:
        if active and name not in self.warnings:
            self.warnings.add(name)
            self._emit("warning", name)
        elif not active and name in self.warnings:
            self.warnings.discard(name)
            self._emit("warning_cleared", name)

    # ------------------------------------------------------------------ accessors

    @property
    def state(self) -> CallState:
        return self._sm.state

    @property
    def muted(self) -> bool:
        return self._muted

    @property
    def is_muted(self) -> bool:
        """Whether the microphone is muted (the seed's ``isMuted()``)."""
        return self._muted

    @property
    def custom_parameters(self) -> dict[str, str]:
        """The custom parameters of the call: given to ``dial(params=...)``, or sent by the
        core with an inbound offer."""
        return dict(self.params)

    @property
    def parameters(self) -> dict[str, str]:
        """What the core said about the call (the seed's ``parameters``)."""
        values = {
            "CallSid": self.call_sid,
            "From": self.from_,
            "To": self.to,
            "Direction": self.direction.value,
        }
        if self.account_id:
            values["AccountSid"] = self.account_id
        if self.phone_number_id:
            values["PhoneNumberId"] = self.phone_number_id
        return values

    @property
    def is_ended(self) -> bool:
        return self.state == CallState.ENDED

    @property
    def duration(self) -> float:
        """Seconds since the call was answered (0 if it never was)."""
        if self.answered_at is None:
            return 0.0
        return (self.ended_at or time.time()) - self.answered_at

    @property
    def stats(self) -> CallStats:
        leg = self._media
        if leg is None:
            return CallStats(0, 0, 0, 0, None, None, 0, 0, 0)
        return leg.stats()

    async def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the call is active (True) or ended without starting (False)."""
        started = asyncio.ensure_future(self._started.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait(
                {started, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            started.cancel()
            ended.cancel()
        return self._started.is_set() and not (self._ended.is_set() and self.answered_at is None)

    async def wait_ended(self, timeout: float | None = None) -> EndReason | None:
        """Wait for the end of the call and return its reason (None on timeout)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        return self.end_reason

    # ------------------------------------------------------------------ actions

    async def accept(self) -> None:
        """Answer an inbound offer (no-op unless pending)."""
        if self.state != CallState.PENDING:
            return
        other = self._operator.current_call
        if other is not None and other is not self:
            raise OperatorError("BUSY", "another call is active; hang it up first")
        self._transition(CallState.CONNECTING)
        try:
            await self._operator._request(
                Accept(id=self._operator._next_id(), call_sid=self.call_sid)
            )
        except OperatorError as exc:
            reason = (
                EndReason.TAKEN_BY_OTHER if exc.code == "CALL_NOT_AVAILABLE" else EndReason.FAILED
            )
            await self._finish(reason, exc.message)
            raise
        if not self.is_ended:
            self._start_media()

    async def reject(self) -> None:
        """Decline an inbound offer; the caller is hung up (no-op unless pending)."""
        if self.state != CallState.PENDING:
            return
        try:
            await self._operator._request(
                Reject(id=self._operator._next_id(), call_sid=self.call_sid, reason="rejected")
            )
        finally:
            await self._finish(EndReason.REJECTED, "rejected on this device")

    async def ignore(self) -> None:
        """Stop ringing here only; the offer stays open for others (no-op unless pending)."""
        if self.state == CallState.PENDING:
            await self._finish(EndReason.IGNORED, "ignored on this device")

    async def hangup(self) -> None:
        """End the call (or cancel it before answer). Safe to call in any state."""
        await self._hang_up(None, "hung up")

    async def _hang_up(self, reason: EndReason | None, message: str) -> None:
        """Tell the core to end the call, then end it here with ``reason`` (default: hangup,
        or cancelled before an answer)."""
        if self.is_ended:
            return
        if self.state == CallState.PENDING:
            await self.reject()
            return
        if reason is not None:
            self._local_end = (reason, message)  # the core's call_ended may come first
        # The hangup goes on the call's own media leg when it is open (the core ends and
        # records the call even while presence is down or reconnecting) and on presence
        # (acknowledged); whichever ends the call first wins, the other is harmless.
        leg = self._media
        if leg is not None:
            await leg.send_control(Hangup(id=self._operator._next_id(), call_sid=self.call_sid))
        request = self._operator._request(
            Hangup(id=self._operator._next_id(), call_sid=self.call_sid)
        )
        presence = asyncio.ensure_future(request)
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({presence, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if presence.done():
            if not presence.cancelled() and (exc := presence.exception()) is not None:
                code = exc.code if isinstance(exc, OperatorError) else type(exc).__name__
                log.info("hangup on presence failed (%s); sent on the media leg", code)
                if leg is not None and not self.is_ended:  # the leg may have been re-opened
                    await leg.send_control(
                        Hangup(id=self._operator._next_id(), call_sid=self.call_sid)
                    )
        else:
            presence.cancel()  # the call ended first (call_ended on the media leg)
            with contextlib.suppress(asyncio.CancelledError, OperatorError):
                await presence
        if reason is None:
            reason = EndReason.HANGUP if self.answered_at is not None else EndReason.CANCELLED
        await self._finish(reason, message)
        await self._ended.wait()

    async def mute(self, on: bool = True) -> None:
        """Send silence instead of the microphone (the microphone stays open)."""
        changed = self._muted != bool(on)
        self._muted = bool(on)
        leg = self._media
        if leg is not None:
            await leg.send_control(Mute(muted=self._muted))
        if changed:
            self._emit("muted", self._muted)
            if not self._muted:
                self._set_warning("speaking-while-muted", False)

    async def send_dtmf(self, digits: str) -> None:
        """Send DTMF to the far end: "0"-"9", "*", "#", "A"-"D", and "w" for a 500 ms pause
        (e.g. ``"12#w34"``). Digits go out 160 ms + 70 ms apart, the pace of a keypad, with
        local feedback on the speaker. The whole string is validated before anything is sent.
        """
        if not isinstance(digits, str) or not _DTMF.match(digits):
            raise OperatorError(
                ClientErrorCode.INVALID_DTMF,
                f"{digits!r} is not a DTMF sequence (0-9, *, #, A-D, w = 500 ms pause; "
                f"at most {_DTMF_MAX} characters)",
            )
        if self.state != CallState.ACTIVE or self._media is None:
            raise OperatorError(ClientErrorCode.INVALID_STATE, "DTMF needs an active call")
        for i, digit in enumerate(digits):
            leg = self._media
            if self.state != CallState.ACTIVE or leg is None:
                raise OperatorError(
                    ClientErrorCode.INVALID_STATE,
                    f"the call ended before DTMF {digits[i:]!r} was sent",
                )
            if digit == "w":
                await asyncio.sleep(_DTMF_PAUSE)
                continue
            await leg.send_control(Dtmf(digits=digit))
            leg.play_locally(digit)
            self.dtmf_sent += digit
            if i + 1 < len(digits):
                await asyncio.sleep(_DTMF_TONE + _DTMF_GAP)

    async def post_feedback(self, score: int, issue: str | None = None) -> None:
        """Rate the call 1 (bad) to 5 (excellent), optionally naming what went wrong:
        ``audio-latency``, ``choppy-audio``, ``dropped-call``, ``echo``, ``noisy-call``,
        ``one-way-audio``. Stored by the core; usually sent after the call ended."""
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise OperatorError(ClientErrorCode.INVALID_FEEDBACK, f"score {score!r} is not 1-5")
        try:
            reason = FeedbackIssue(issue) if issue is not None else None
        except ValueError:
            names = ", ".join(i.value for i in FeedbackIssue)
            raise OperatorError(
                ClientErrorCode.INVALID_FEEDBACK, f"issue {issue!r} is not one of: {names}"
            ) from None
        await self._operator._ensure_connected()
        await self._operator._request(
            PostFeedback(
                id=self._operator._next_id(), call_sid=self.call_sid, score=score, issue=reason
            )
        )

    async def send_message(self, content: str, content_type: str = "text/plain") -> None:
        """Send a message to the far end of the call (its server-side application); emits
        ``message_sent`` once the core delivered it."""
        if self.state not in (CallState.ACTIVE, CallState.RECONNECTING):
            raise OperatorError(ClientErrorCode.INVALID_STATE, "messages need an active call")
        request = SendMessage(
            id=self._operator._next_id(),
            call_sid=self.call_sid,
            content=content,
            content_type=content_type,
        )
        try:
            validated = decode_message(
                encode_message(request), channel=Channel.PRESENCE, sender="client"
            )
        except ProtocolError as exc:
            raise OperatorError(exc.code, exc.message) from None
        await self._operator._request(validated)
        self._emit("message_sent", content, content_type)

    # ------------------------------------------------------------------ driven by the operator

    async def _update_token(self, token: str) -> None:
        leg = self._media
        if leg is not None:
            await leg.send_control(UpdateToken(id=self._operator._next_id(), token=token))

    def _transition(self, new: CallState) -> bool:
        try:
            self._sm.go(new)
        except InvalidTransition:
            log.debug("call %s ignores %s -> %s", self.call_sid, self.state, new)
            return False
        return True

    def _on_ringing(self, early_media: bool = False) -> None:
        if self.state == CallState.CONNECTING and self._transition(CallState.RINGING):
            self._emit("ringing", early_media)
            if not early_media:
                self._operator._spawn(self._operator.audio.start_ringing("ringback"))
            elif self._media is not None:
                # The far end's network sends its own ringback or announcement: play it (the
                # microphone is not sent before the answer).
                self._media.start_audio()

    def _on_answered(self) -> None:
        self._answered = True
        self._maybe_activate()

    def _on_media_ready(self) -> None:
        self._media_ready = True
        self._maybe_activate()

    def _maybe_activate(self) -> None:
        if not (self._answered and self._media_ready):
            return
        if self.state in (CallState.CONNECTING, CallState.RINGING) and self._transition(
            CallState.ACTIVE
        ):
            self.answered_at = time.time()
            if self._media is not None:
                self._media.start_audio()
            self._started.set()
            self._emit("accepted")
            self._operator._emit("call_started", self)

    def _start_media(self) -> None:
        if self._media is None:
            self._media = _MediaLeg(self, self._operator)
            self._media.start()

    async def _finish(self, reason: EndReason, message: str) -> None:
        """End the call once: stop media, emit ``call_ended``. Later calls return at once
        (never wait here: the media leg's own task may be the one being stopped)."""
        if self._finishing:
            return
        self._finishing = True
        if self._local_end is not None:
            reason, message = self._local_end
        self._transition(CallState.ENDED)
        self.end_reason = reason
        self.end_message = message
        self.ended_at = time.time()
        try:
            if self._media is not None:
                await self._media.stop()
        finally:
            self._operator._call_finished(self)
            if reason in (EndReason.CANCELLED, EndReason.IGNORED):
                self._emit("cancelled")
            elif reason == EndReason.REJECTED:
                self._emit("rejected")
            self._emit("disconnected")
            self._ended.set()


def _reopenable(exc: BaseException) -> bool:
    """Whether a failed re-open is worth another try: unreachable cores and lost sockets are,
    a refusal by the core (the call is gone, access denied) is not."""
    if isinstance(exc, OperatorError):
        return exc.code in (
            ClientErrorCode.CONNECTION_FAILED,
            ClientErrorCode.CONNECTION_LOST,
            ClientErrorCode.TIMEOUT,
            ClientErrorCode.TOKEN_FETCH_FAILED,
            ClientErrorCode.MEDIA_FAILED,
        )
    return True


class _DeviceWatch:
    """Notices a sound card that stopped delivering microphone frames (its callbacks
    stopped: unplugged, or the sound server died) or reported a failure."""

    FIRST_FRAME_WITHIN = 5.0
    STALL_AFTER = 2.0

    def __init__(self, now: float) -> None:
        self.opened_at = now
        self.last_frame_at: float | None = None
        self.reported = False

    def lost(self, device: AudioDevice, captured: bool, now: float) -> bool:
        if self.reported or isinstance(device, NullAudioDevice):
            return False
        if captured:
            self.last_frame_at = now
        failed = device.error is not None
        if self.last_frame_at is None:
            stalled = now - self.opened_at > self.FIRST_FRAME_WITHIN
        else:
            stalled = now - self.last_frame_at > self.STALL_AFTER
        if failed or stalled:
            self.reported = True
        return self.reported


class _Sender:
    """The media leg's sending side, on the event loop: once per captured frame, process,
    encode and send it; every 50 ms: levels and their warnings; every second: a quality
    sample and a ping.

    It runs as a timer callback that re-arms itself, not as a task sleeping between frames:
    one callback per wake-up instead of a sleep's timer, its future and the task's step
    (50 wake-ups a second, each from cold caches). What has to wait — re-opening a sound
    card that stopped — goes back to the task in :meth:`run`. The device is the leg's
    (``_MediaLeg._device``)."""

    def __init__(self, leg: _MediaLeg) -> None:
        self._leg = leg
        self._loop = asyncio.get_running_loop()
        # time.monotonic(), the clock of the device's capture timestamps, not loop.time():
        # other loops' clocks differ (uvloop's counts whole milliseconds, cached per turn).
        self._watch = _DeviceWatch(time.monotonic())
        self._sequence = 0
        self._timestamp = 0
        self._timer: asyncio.Handle | None = None
        self._lost: asyncio.Future[AudioDevice] | None = None
        self._next_ping = 0.0
        self._next_level = 0.0
        self._started: float | None = None  # when the call became active (samples from it)
        self._next_sample = 0.0
        self._muted_talk = SpeakingWhileMuted()
        self._flat_input = FlatInputDetector()
        self._flat = False

    def run(self) -> asyncio.Future[AudioDevice]:
        """Start sending; the future resolves with the leg's device if it stops delivering
        (call :meth:`watch_afresh` once the leg has another)."""
        self._lost = self._loop.create_future()
        self._timer = self._loop.call_soon(self._tick)
        return self._lost

    def watch_afresh(self) -> None:
        """The leg's device was replaced: watch the new one from now."""
        self._watch = _DeviceWatch(time.monotonic())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        lost = self._lost
        device = self._leg._device
        if lost is None or lost.done() or device is None:  # the task is gone (cancelled)
            return
        try:
            wake_at = self._send(device)
        except Exception as exc:  # the task raises it (as a loop in the task would)
            lost.set_exception(exc)
            return
        if wake_at is None:
            lost.set_result(device)
        else:
            self._timer = self._loop.call_later(max(0.0, wake_at - time.monotonic()), self._tick)

    def _send(self, device: AudioDevice) -> float | None:
        """One wake-up's work; when to wake next, or None if the device stopped."""
        leg = self._leg
        call = leg._call
        audio = leg._op.audio
        ws = leg._ws
        processor = audio.processor  # may be switched on or off during the call
        active = audio.active_device
        if active is not None and active is not device:
            device = leg._device = active  # replaced (see AudioManager)
            self.watch_afresh()
        captured = False
        while (pcm := device.read_frame()) is not None:
            captured = True
            if processor is not None:
                pcm = processor.process_capture(pcm)
            payload = leg._silence if call.muted else leg._encode(pcm).tobytes()
            if ws is None or call.state != CallState.ACTIVE:
                continue
            frame = encode_audio_frame(
                self._sequence, self._timestamp, payload, marker=self._sequence == 0
            )
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._timestamp = (self._timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
            sent = send_audio_frame(ws, frame)
            if sent is None:
                break  # the leg is closing: the receive side re-opens it or ends the call
            if sent:
                leg.quality.frame_sent(len(frame))
            else:
                leg.frames_unsent += 1
        now = time.monotonic()
        wake_at = leg._next_wake(now, device.capture.last_push_at)
        if audio.uses_sound_card and self._watch.lost(device, captured, now):
            return None
        if now >= self._next_level:
            self._next_level = now + _LEVEL_EVERY
            level_in, level_out = device.levels.read()
            call._emit("volume", level_in, level_out)
            talking = call.muted and self._muted_talk.update(level_in, now)
            call._set_warning("speaking-while-muted", talking)
            self._flat = self._flat_input.update(level_in, now, muted=call.muted)
        if self._started is None and call.state == CallState.ACTIVE:
            self._started = now
            self._next_sample = now + 1.0
        if self._started is not None and now >= self._next_sample:
            self._next_sample = max(self._next_sample + 1.0, now + 0.5)
            self._sample(device, now - self._started)
        if ws is not None and now >= self._next_ping:
            self._next_ping = now + _PING_EVERY
            leg._op._spawn(leg.ping())
            if now - leg.last_rx > _MEDIA_SILENCE_LIMIT:
                # Not even a pong for 3 s: the link is dead without having closed (a
                # silent network path). Drop it; the leg is re-opened as after a cut.
                log.warning("media leg of %s silent for 3 s: re-opening", call.call_sid)
                ws.transport.abort()
        return wake_at

    def _sample(self, device: AudioDevice, at: float) -> None:
        leg = self._leg
        call = leg._call
        level_in, level_out = device.levels.read()
        sample, raised, cleared = leg.quality.sample(
            at=at,
            codec=call.codec or "PCMU",
            rtt_ms=leg._rtts[-1] * 1000 if leg._rtts else None,
            input_level=level_in,
            output_level=level_out,
            input_flat=self._flat,
        )
        call._emit("sample", sample)
        for name in sorted(raised):
            call._set_warning(name, True)
        for name in sorted(cleared):
            call._set_warning(name, False)


class _MediaLeg:
    """Opens the call's media WebSocket, pumps audio between it and the audio device."""

    def __init__(self, call: Call, operator: Operator) -> None:
        self._call = call
        self._op = operator
        self._ws: MediaConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._device: AudioDevice | None = None
        self._stopping = False
        self.frames_malformed = 0
        self.frames_unsent = 0
        self._rtts: list[float] = []
        self.hangups: set[str] = set()  # ids of hangups sent on this leg
        self.last_rx = time.monotonic()
        self.quality = QualityMonitor()
        self._encode = encode_mulaw
        self._decode = decode_mulaw
        self._silence = _MULAW_SILENCE

    def _finished(self) -> bool:
        return self._stopping or self._call.is_ended

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"media-{self._call.call_sid}"
        )

    def stats(self) -> CallStats:
        dev = self._device.stats() if self._device is not None else None
        rtt = self._rtts[-1] * 1000 if self._rtts else None
        median = statistics.median(self._rtts) * 1000 if self._rtts else None
        return CallStats(
            frames_sent=self.quality.frames_sent,
            frames_received=self.quality.frames_received,
            frames_malformed=self.frames_malformed,
            frames_unsent=self.frames_unsent,
            rtt_ms=rtt,
            rtt_median_ms=median,
            device_capture_dropped=dev.capture_dropped if dev else 0,
            device_playback_underruns=dev.playback_underruns if dev else 0,
            device_playback_dropped=dev.playback_dropped if dev else 0,
        )

    async def ping(self) -> None:
        """A ping for the round-trip time, stamped as it is sent (its pong echoes the
        stamp)."""
        await self.send_control(Ping(ts=time.monotonic()))

    async def send_control(self, message: Mute | Dtmf | Ping | Hangup | UpdateToken) -> bool:
        """Send a control message on the leg; False if it is not open."""
        if isinstance(message, Hangup):
            self.hangups.add(message.id)
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(encode_message(message))
        except websockets.ConnectionClosed:
            return False
        return True

    async def _open(self) -> MediaConnection | None:
        """Open the leg and wait for ``media_ready``; None if the call ended meanwhile."""
        from softphone.engine.transport import connect_ws, ws_url

        token = await self._op._fresh_token()
        url = ws_url(self._op.core_url, f"/v1/calls/{self._call.call_sid}/media")
        ws = await connect_ws(
            url,
            token.token,
            timeout=self._op.request_timeout,
            tls=self._op.tls,
            connection=MediaConnection,
        )
        assert isinstance(ws, MediaConnection)
        hello = Hello(
            protocol=1,
            client=self._op.client_name,
            heartbeat_interval=5.0,
            codecs=list(self._op.codec_preferences),
        )
        await ws.send(encode_message(hello))
        raw = await asyncio.wait_for(ws.recv(), self._op.request_timeout)
        first = decode_message(raw, channel=Channel.MEDIA, sender="core")
        if isinstance(first, Error):
            await ws.close()
            raise OperatorError(first.code, first.message)
        if isinstance(first, CallEnded):
            await ws.close()
            await self._call._finish(first.reason, first.message)
            return None
        if isinstance(first, MediaReady):
            self._call.codec = first.codec.value
            alaw = first.codec == Codec.PCMA
            self._encode = encode_alaw if alaw else encode_mulaw
            self._decode = decode_alaw if alaw else decode_mulaw
            self._silence = _ALAW_SILENCE if alaw else _MULAW_SILENCE
            ws.on_audio = self._on_audio
        else:
            await ws.close()
            raise OperatorError(
                ClientErrorCode.PROTOCOL_VIOLATION, f"expected media_ready, got {first}"
            )
        return ws

    async def _run(self) -> None:
        call = self._call
        window = self._op.media_reconnect_window
        lost_at: float | None = None  # monotonic time the open leg dropped
        attempt = 0
        while not self._finished():
            try:
                if lost_at is None:
                    ws = await self._open()
                else:  # re-opening: every attempt stays inside the window
                    left = window - (time.monotonic() - lost_at)
                    if left <= 0:
                        raise TimeoutError(f"not re-opened within {window:g} s")
                    async with asyncio.timeout(left):
                        ws = await self._open()
            except (
                OperatorError,
                ProtocolError,
                OSError,
                TimeoutError,
                websockets.WebSocketException,
            ) as exc:
                if self._finished():
                    return
                left = window - (time.monotonic() - lost_at) if lost_at is not None else 0.0
                if call.state == CallState.RECONNECTING and left > 0 and _reopenable(exc):
                    pause = _MEDIA_RECONNECT_DELAYS[min(attempt, len(_MEDIA_RECONNECT_DELAYS) - 1)]
                    attempt += 1
                    log.info("media leg of %s: re-open failed (%s)", call.call_sid, exc)
                    await asyncio.sleep(min(pause, left))
                    continue
                err = (
                    exc
                    if isinstance(exc, OperatorError)
                    else OperatorError(ClientErrorCode.MEDIA_FAILED, str(exc) or repr(exc), exc)
                )
                if lost_at is not None:
                    message = (
                        f"the media leg dropped and could not be re-opened within {window:g} s"
                        f" ({err.message})"
                    )
                else:
                    message = f"media leg failed: {err.message}"
                call._emit_error(OperatorError(err.code, message, exc))
                await call._finish(EndReason.FAILED, message)
                return
            if ws is None:
                return
            self._ws = ws
            attempt = 0
            if call.state == CallState.RECONNECTING:
                lost_at = None
                call._transition(CallState.ACTIVE)
                call._emit("reconnected")
                self._op._emit("call_reconnected", call)
            else:
                call._on_media_ready()
            await self._receive(ws)
            self._ws = None
            if self._finished():
                return
            code = ws.close_code
            if code in _NO_REOPEN:
                message = f"the core closed the media leg ({code}: {ws.close_reason or 'refused'})"
                call._emit_error(OperatorError(ClientErrorCode.MEDIA_FAILED, message))
                await call._finish(EndReason.FAILED, message)
                return
            # The leg dropped while the call goes on: re-open it with a fresh token.
            lost_at = time.monotonic()
            if call.state == CallState.ACTIVE:
                call._transition(CallState.RECONNECTING)
                call._emit("reconnecting")
                self._op._emit("call_reconnecting", call)
            elif call.state != CallState.RECONNECTING:
                lost_at = None  # not answered yet: the first open is retried as before

    async def _receive(self, ws: MediaConnection) -> None:
        self.last_rx = time.monotonic()
        try:
            async for raw in ws:
                self.last_rx = time.monotonic()
                if isinstance(raw, bytes):  # fragmented: whole ones go to _on_audio directly
                    self._on_audio(raw)
                    continue
                try:
                    message = decode_message(raw, channel=Channel.MEDIA, sender="core")
                except ProtocolError as exc:
                    self._call._emit_error(
                        OperatorError(exc.code, f"from the media leg: {exc.message}")
                    )
                    continue
                if isinstance(message, Pong):
                    self._rtts.append(max(0.0, time.monotonic() - message.ts))
                    del self._rtts[:-120]
                elif isinstance(message, CallEnded):
                    await self._call._finish(message.reason, message.message)
                    return
                elif isinstance(message, CallMessage):
                    self._call._emit("message_received", message.content, message.content_type)
                elif isinstance(message, Error):
                    if message.reply_to is not None and message.reply_to in self.hangups:
                        continue  # the call was already over when our hangup arrived
                    self._call._emit_error(OperatorError(message.code, message.message))
        except websockets.ConnectionClosed:
            return

    def _on_audio(self, raw: bytes) -> None:
        """One binary message from the core: an audio frame for the jitter buffer (and the
        echo canceller's reference). Called by :class:`MediaConnection` as the frame is
        parsed: synchronous, never blocks."""
        now = self.last_rx = time.monotonic()
        try:
            frame = decode_audio_frame(raw)
        except ProtocolError:
            self.frames_malformed += 1
            return
        self.quality.frame_received(frame.sequence, frame.timestamp, now, len(raw))
        device = self._device
        if device is not None:
            pcm = self._decode(frame.payload)
            processor = self._op.audio.processor
            if processor is not None:
                processor.process_render(pcm)
            device.write_frame(pcm, frame.sequence, frame.timestamp)

    def start_audio(self) -> None:
        """Open the audio device and start the loop (when the call becomes active, or when it
        rings with early media); microphone frames are sent only while the call is active."""
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(
                self._send_loop(), name="media-sender"
            )

    @staticmethod
    def _next_wake(now: float, pushed_at: float) -> float:
        """When the sender should look at the microphone queue next.

        It wakes once per captured frame, just after the device is due to deliver it
        (``_CAPTURE_MARGIN`` after the last frame's arrival plus 20 ms): half the wake-ups
        of a fixed 10 ms poll, and each frame leaves within about 2 ms of its capture
        instead of 0-10 ms — at a steady phase, so the far end's jitter buffer sees a
        steady stream. A frame that is late is looked for again every 2 ms for 10 ms;
        without capture timing (no frame yet, or a device that stopped) it polls every
        10 ms."""
        if not pushed_at or now - pushed_at > _FRAME_S + _SEND_POLL:
            return now + _SEND_POLL
        due = pushed_at + _FRAME_S + _CAPTURE_MARGIN
        return due if due > now else now + _CAPTURE_MARGIN

    async def _send_loop(self) -> None:
        """Open the call's audio device, then let a :class:`_Sender` send each captured
        frame until the leg stops; come back here only to replace a device that stopped."""
        audio = self._op.audio
        device = await audio.open_for_call(self._call)
        self._device = device
        if self._stopping:  # the call ended while the device was opening
            await audio.release(device)
            return
        sender = _Sender(self)
        try:
            while True:
                lost = await sender.run()
                self._device = await self._device_lost(lost)
                sender.watch_afresh()
        finally:
            sender.stop()

    async def _device_lost(self, device: AudioDevice) -> AudioDevice:
        """The sound card stopped delivering (unplugged, sound server gone): say so, then go
        on as the operator chose — on a fresh device or silence, or by hanging up."""
        call, op = self._call, self._op
        reason = str(device.error.message) if device.error is not None else "no audio for 2 s"
        message = f"the audio device stopped ({reason}): unplugged, or the sound server went away"
        if op.audio_device_lost == "hangup":
            call._emit_error(OperatorError(AudioErrorCode.AUDIO_DEVICE_LOST, message))
            op._spawn(call._hang_up(EndReason.FAILED, "the audio device was lost"))
            return device
        new = await op.audio.recover_lost(call, device)
        fallback = isinstance(new, NullAudioDevice)
        call._emit_error(
            OperatorError(
                AudioErrorCode.AUDIO_DEVICE_LOST,
                message
                + (
                    "; the call goes on without sound: pick another microphone or speaker"
                    if fallback
                    else "; the call goes on with the device re-opened"
                ),
            )
        )
        return new

    def play_locally(self, digits: str) -> None:
        """DTMF feedback on the operator's speaker (when sounds are on)."""
        device = self._device
        if device is not None:
            device.mixer.play(dtmf_sound(digits))

    async def stop(self) -> None:
        """Stop sending and receiving, close the socket and the device. Does not wait for the
        leg's tasks (one of them may be the caller); they end at their next await."""
        self._stopping = True
        current = asyncio.current_task()
        for task in (self._sender, self._task):
            if task is not None and task is not current and not task.done():
                task.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        device = self._op.audio.active_device or self._device
        if device is not None:
            await self._op.audio.release(device)
