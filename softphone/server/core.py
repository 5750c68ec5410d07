"""Presence, routing and call control of the core, independent of the HTTP/WebSocket front.

The front (:mod:`softphone.server.app`) authenticates connections, decodes messages and
calls into :class:`Core`; the core answers through the :class:`Peer` of each connection.

Call status machine (the core's view; the record's ``status`` column)::

    initiated  --media leg attached, routed-->  ringing | in_progress | completed
    ringing    --inbound accepted----------->  connecting
    ringing    --outbound answered---------->  in_progress
    connecting --acceptor's media attached-->  in_progress
    any but completed ----------------------->  completed   (with an end reason)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from softphone.media.g711 import encode_alaw, encode_mulaw
from softphone.protocol import (
    Accept,
    Ack,
    Availability,
    CallAnswered,
    CallCreated,
    CallEnded,
    CallMessage,
    CallOffer,
    CallRinging,
    CloseCode,
    Codec,
    Dial,
    Direction,
    EndReason,
    ErrorCode,
    Hangup,
    MediaReady,
    Message,
    PostFeedback,
    ProtocolError,
    Reject,
    SendMessage,
    SetAvailability,
    choose_codec,
    encode_audio_frame,
    validate_e164,
)
from softphone.protocol.frames import FRAME_SAMPLES
from softphone.server.auth import Claims, utc_iso
from softphone.server.network import CallControl, FarEnd
from softphone.server.registry import CallRecords, LocalPresence, Network, Presence
from softphone.server.store import CallRow
from softphone.server.timings import CoreTimings
from softphone.server.voices import Samples

__all__ = ["CallStatus", "Core", "CoreCall", "CoreTimings", "MediaLeg", "OperatorSession", "Peer"]

log = logging.getLogger("audin.core")


class Peer(Protocol):
    """One WebSocket as the core sees it."""

    @property
    def closed(self) -> bool: ...

    async def send(self, message: Message) -> None: ...

    def send_audio(self, frame: bytes) -> bool:
        """Send one audio frame now, without waiting (False: dropped, see WsPeer)."""
        ...

    async def close(self, code: CloseCode, reason: str) -> None: ...


class CallStatus(StrEnum):
    INITIATED = "initiated"
    RINGING = "ringing"
    CONNECTING = "connecting"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


CALL_TRANSITIONS: Final[dict[CallStatus, frozenset[CallStatus]]] = {
    CallStatus.INITIATED: frozenset(
        {CallStatus.RINGING, CallStatus.IN_PROGRESS, CallStatus.COMPLETED}
    ),
    CallStatus.RINGING: frozenset(
        {CallStatus.CONNECTING, CallStatus.IN_PROGRESS, CallStatus.COMPLETED}
    ),
    CallStatus.CONNECTING: frozenset({CallStatus.IN_PROGRESS, CallStatus.COMPLETED}),
    CallStatus.IN_PROGRESS: frozenset({CallStatus.COMPLETED}),
    CallStatus.COMPLETED: frozenset(),
}


@dataclass(eq=False)
class OperatorSession:
    """One presence WebSocket after a successful ``hello``."""

    session_id: str
    claims: Claims
    peer: Peer
    heartbeat_interval: float
    availability: set[str] = field(default_factory=set)
    opened_at: float = field(default_factory=time.monotonic)
    closed: bool = False

    @property
    def operator_key(self) -> tuple[str, str]:
        return (self.claims.account_id, self.claims.operator_ref)


@dataclass(eq=False)
class MediaLeg:
    """The media WebSocket of a call's operator."""

    call: CoreCall
    claims: Claims
    peer: Peer
    codec: Codec = Codec.PCMU
    muted: bool = False
    frames_in: int = 0
    frames_out: int = 0


@dataclass(eq=False)
class CoreCall:
    sid: str
    account_id: str
    direction: Direction
    from_: str
    to: str
    phone_number_id: str | None
    params: dict[str, str]
    status: CallStatus
    owner: OperatorSession | None = None
    offered: set[OperatorSession] = field(default_factory=set)
    media: MediaLeg | None = None
    far_end: FarEnd | None = None
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    early_media: bool = False
    out_sequence: int = 0
    out_timestamp: int = 0
    dtmf: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def operator_key(self) -> tuple[str, str] | None:
        if self.owner is None:
            return None
        return self.owner.operator_key


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


class Core:
    """The operator service's state: sessions, calls, routing. Single event loop, no locks."""

    def __init__(
        self,
        store: CallRecords,
        network: Network,
        timings: CoreTimings | None = None,
        clock: Callable[[], float] = time.time,
        presence: Presence | None = None,
    ) -> None:
        self.store = store
        self.network = network
        self.presence: Presence = presence if presence is not None else LocalPresence()
        self.timings = timings or CoreTimings()
        self._clock = clock
        self.calls: dict[str, CoreCall] = {}
        """Calls not yet completed, handled by this core (their media legs end here)."""
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sessions(self) -> Mapping[str, OperatorSession]:
        """Open presence sessions by id (read-only; change them through ``presence``)."""
        return self.presence.by_id()

    def _now(self) -> str:
        return utc_iso(self._clock())

    # ------------------------------------------------------------------ sessions

    def open_session(
        self, claims: Claims, peer: Peer, heartbeat_interval: float
    ) -> OperatorSession:
        session = OperatorSession("OS" + secrets.token_hex(8), claims, peer, heartbeat_interval)
        self.presence.add(session)
        # A reconnecting operator takes its unfinished calls back.
        for call in self.calls.values():
            owner = call.owner
            if owner is not None and owner.closed and owner.operator_key == session.operator_key:
                call.owner = session
        log.info(
            "session open id=%s account=%s operator=%s",
            session.session_id,
            claims.account_id,
            claims.operator_ref,
            extra={
                "event": "session_open",
                "session": session.session_id,
                "account": claims.account_id,
                "operator": claims.operator_ref,
            },
        )
        return session

    async def close_session(self, session: OperatorSession) -> None:
        if session.closed:
            return
        session.closed = True
        self.presence.remove(session)
        for call in list(self.calls.values()):
            if session in call.offered:
                call.offered.discard(session)
        log.info(
            "session closed id=%s",
            session.session_id,
            extra={"event": "session_closed", "session": session.session_id},
        )

    def _live_session(self, key: tuple[str, str]) -> OperatorSession | None:
        return self.presence.newest_of(key)

    def has_active_call(self, key: tuple[str, str]) -> bool:
        """Whether the operator ``(account id, operator ref)`` has an unfinished call."""
        return self._active_call_of(key) is not None

    def _active_call_of(self, key: tuple[str, str]) -> CoreCall | None:
        for call in self.calls.values():
            if call.operator_key == key and call.status != CallStatus.COMPLETED:
                return call
        return None

    # ------------------------------------------------------------------ presence messages

    async def handle_presence(self, session: OperatorSession, message: Message) -> None:
        """Apply one decoded client message of the presence channel."""
        match message:
            case SetAvailability():
                await self._set_availability(session, message)
            case Dial():
                await self._dial(session, message)
            case Accept():
                await self._accept(session, message)
            case Reject():
                await self._reject(session, message)
            case Hangup():
                await self.hangup(session.claims, message.call_sid)
                await self._send(session, Ack(reply_to=message.id))
            case SendMessage():
                await self.deliver_message(session.claims, message)
                await self._send(session, Ack(reply_to=message.id))
            case PostFeedback():
                self.store_feedback(session.claims, message)
                await self._send(session, Ack(reply_to=message.id))
            case _:
                raise ProtocolError(
                    ErrorCode.UNEXPECTED_MESSAGE, f"{type(message).__name__} is not handled here"
                )

    async def _set_availability(self, session: OperatorSession, msg: SetAvailability) -> None:
        owned = {pn.id for pn in self.store.phone_numbers(session.claims.account_id)}
        allowed = owned & set(session.claims.phone_number_ids)
        accepted = [pn for pn in dict.fromkeys(msg.phone_number_ids) if pn in allowed]
        rejected = [pn for pn in dict.fromkeys(msg.phone_number_ids) if pn not in allowed]
        added = self.presence.set_numbers(session, set(accepted))
        await self._send(
            session, Availability(reply_to=msg.id, accepted=accepted, rejected=rejected)
        )
        # Calls ringing on a number this operator just came online on are offered now.
        for call in list(self.calls.values()):
            if (
                call.status == CallStatus.RINGING
                and call.direction == Direction.INBOUND
                and call.phone_number_id in added
                and call.account_id == session.claims.account_id
                and session not in call.offered
            ):
                await self._offer(call, session)
        # Offers on numbers the operator left are withdrawn from it.
        for call in list(self.calls.values()):
            if session in call.offered and call.phone_number_id not in session.availability:
                call.offered.discard(session)
                await self._send(
                    session,
                    CallEnded(
                        call_sid=call.sid,
                        reason=EndReason.CANCELLED,
                        message=f"no longer online on {call.to}",
                    ),
                )

    async def _dial(self, session: OperatorSession, msg: Dial) -> None:
        claims = session.claims
        to = validate_e164(msg.to)
        numbers = {
            pn.phone_number: pn
            for pn in self.store.phone_numbers(claims.account_id)
            if pn.id in claims.phone_number_ids
        }
        if msg.caller_id is None:
            if not numbers:
                raise ProtocolError(
                    ErrorCode.CALLER_ID_NOT_ALLOWED, "the token allows no number to call from"
                )
            caller = numbers[min(numbers)]
        else:
            validate_e164(msg.caller_id)
            found = numbers.get(msg.caller_id)
            if found is None:
                raise ProtocolError(
                    ErrorCode.CALLER_ID_NOT_ALLOWED,
                    f"{msg.caller_id} is not one of this operator's numbers",
                )
            caller = found
        if self._active_call_of(session.operator_key) is not None:
            raise ProtocolError(ErrorCode.BUSY, "the operator already has an active call")
        call = CoreCall(
            sid=new_call_sid(),
            account_id=claims.account_id,
            direction=Direction.OUTBOUND,
            from_=caller.phone_number,
            to=to,
            phone_number_id=caller.id,
            params=dict(msg.params),
            status=CallStatus.INITIATED,
            owner=session,
        )
        self.calls[call.sid] = call
        self._record_new(call, operator_ref=claims.operator_ref)
        log.info(
            "call %s outbound %s -> %s",
            call.sid,
            call.from_,
            call.to,
            extra={
                "event": "call_started",
                "call_sid": call.sid,
                "account": call.account_id,
                "direction": "outbound",
                "operator": claims.operator_ref,
            },
        )
        await self._send(
            session,
            CallCreated(
                reply_to=msg.id,
                call_sid=call.sid,
                direction=call.direction,
                from_=call.from_,
                to=call.to,
                params=call.params,
            ),
        )
        self._arm(call, "media", self.timings.media_attach_timeout, self._media_timeout, call)

    async def _accept(self, session: OperatorSession, msg: Accept) -> None:
        call = self._call_for(session.claims, msg.call_sid)
        if session not in call.offered:
            if call.status != CallStatus.RINGING:
                raise ProtocolError(ErrorCode.CALL_NOT_AVAILABLE, "the call was taken or ended")
            raise ProtocolError(ErrorCode.FORBIDDEN, "the call was not offered to this session")
        active = self._active_call_of(session.operator_key)
        if active is not None and active is not call:
            raise ProtocolError(ErrorCode.BUSY, "the operator already has an active call")
        self._transition(call, CallStatus.CONNECTING)
        self._disarm(call, "ring")
        others = call.offered - {session}
        call.offered.clear()
        call.owner = session
        self.store.update_call(
            call.sid, status=call.status.value, operator_ref=session.claims.operator_ref
        )
        await self._send(session, Ack(reply_to=msg.id))
        for other in others:
            await self._send(
                other,
                CallEnded(
                    call_sid=call.sid,
                    reason=EndReason.TAKEN_BY_OTHER,
                    message=f"answered by {session.claims.display_name}",
                ),
            )
        self._arm(call, "media", self.timings.media_attach_timeout, self._media_timeout, call)

    async def _reject(self, session: OperatorSession, msg: Reject) -> None:
        call = self._call_for(session.claims, msg.call_sid)
        if session not in call.offered:
            raise ProtocolError(ErrorCode.CALL_NOT_AVAILABLE, "the call is not offered to you")
        if msg.reason == "busy":
            call.offered.discard(session)
        else:
            await self._end(
                call,
                EndReason.REJECTED,
                f"rejected by {session.claims.display_name}",
                others=EndReason.CANCELLED,
                by={session},
            )
        await self._send(session, Ack(reply_to=msg.id))

    async def hangup(self, claims: Claims, call_sid: str) -> None:
        """The operator ends (or cancels) a call; valid from presence and media channels."""
        call = self._call_for(claims, call_sid)
        key = (claims.account_id, claims.operator_ref)
        if call.operator_key == key:
            if call.status == CallStatus.IN_PROGRESS:
                await self._end(call, EndReason.HANGUP, "hung up by the operator")
            else:
                await self._end(call, EndReason.CANCELLED, "cancelled by the operator")
            return
        offered_to = [s for s in call.offered if s.operator_key == key]
        if offered_to:
            await self._end(
                call,
                EndReason.REJECTED,
                f"rejected by {claims.display_name}",
                others=EndReason.CANCELLED,
                by=set(offered_to),
            )
            return
        raise ProtocolError(ErrorCode.CALL_NOT_FOUND, "no such call for this operator")

    def _call_for(self, claims: Claims, call_sid: str) -> CoreCall:
        call = self.calls.get(call_sid)
        if call is None or call.account_id != claims.account_id:
            raise ProtocolError(ErrorCode.CALL_NOT_FOUND, f"no call {call_sid} for this operator")
        return call

    async def deliver_message(self, claims: Claims, msg: SendMessage) -> None:
        """An operator's ``send_message`` to the far end of its call in progress."""
        call = self._call_for(claims, msg.call_sid)
        if call.operator_key != (claims.account_id, claims.operator_ref):
            raise ProtocolError(ErrorCode.FORBIDDEN, "this call belongs to another operator")
        if call.status != CallStatus.IN_PROGRESS or call.far_end is None:
            raise ProtocolError(ErrorCode.CALL_NOT_AVAILABLE, "the call is not in progress")
        await call.far_end.on_message(msg.content, msg.content_type)

    def store_feedback(self, claims: Claims, msg: PostFeedback) -> None:
        """Keep an operator's rating of one of its own calls (ended or not)."""
        row = self.store.call(msg.call_sid)
        if row is None or row.account_id != claims.account_id:
            raise ProtocolError(ErrorCode.CALL_NOT_FOUND, f"no call {msg.call_sid} for you")
        if row.operator_ref != claims.operator_ref:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the call was handled by another operator")
        self.store.add_feedback(
            call_sid=msg.call_sid,
            account_id=claims.account_id,
            operator_ref=claims.operator_ref,
            score=msg.score,
            issue=msg.issue.value if msg.issue is not None else None,
            now=self._now(),
        )
        log.info("feedback on %s: %d %s", msg.call_sid, msg.score, msg.issue or "")

    async def _send_message(self, call: CoreCall, content: str, content_type: str) -> None:
        """A far end's message to the operator: on the media leg, else on presence."""
        message = CallMessage(call_sid=call.sid, content=content, content_type=content_type)
        leg = call.media
        if leg is not None and not leg.peer.closed:
            with contextlib.suppress(ConnectionError):
                await leg.peer.send(message)
                return
        await self._notify_owner(call, message)

    # ------------------------------------------------------------------ inbound

    async def place_inbound(
        self,
        from_: str,
        to: str,
        params: dict[str, str],
        ring_timeout: float | None = None,
        far_end: FarEnd | None = None,
    ) -> tuple[str, int]:
        """A simulated caller rings ``to``: offer to every operator online on that number.
        ``far_end`` is the caller once answered (default: the network's inbound caller)."""
        validate_e164(from_)
        validate_e164(to)
        number = self.store.phone_number_by_e164(to)
        if number is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no account owns {to}")
        call = CoreCall(
            sid=new_call_sid(),
            account_id=number.account_id,
            direction=Direction.INBOUND,
            from_=from_,
            to=to,
            phone_number_id=number.id,
            params=dict(params),
            status=CallStatus.RINGING,
            far_end=far_end if far_end is not None else self.network.inbound_caller(),
        )
        self.calls[call.sid] = call
        self._record_new(call, operator_ref=None)
        timeout = ring_timeout if ring_timeout is not None else self.timings.offer_timeout
        self._arm(call, "ring", timeout, self._ring_timeout, call)
        targets = self.presence.online_on(number.account_id, number.id)
        for session in targets:
            await self._offer(call, session)
        log.info(
            "call %s inbound %s -> %s offered to %d",
            call.sid,
            from_,
            to,
            len(targets),
            extra={
                "event": "call_started",
                "call_sid": call.sid,
                "account": call.account_id,
                "direction": "inbound",
                "offered_to": len(targets),
            },
        )
        return call.sid, len(targets)

    async def _offer(self, call: CoreCall, session: OperatorSession) -> None:
        assert call.phone_number_id is not None
        call.offered.add(session)
        await self._send(
            session,
            CallOffer(
                call_sid=call.sid,
                from_=call.from_,
                to=call.to,
                phone_number_id=call.phone_number_id,
                params=call.params,
            ),
        )

    async def remote_hangup(self, call_sid: str) -> CoreCall:
        """The far end hangs up (admin endpoint and simulated parties)."""
        call = self.calls.get(call_sid)
        if call is None:
            raise ProtocolError(ErrorCode.CALL_NOT_FOUND, f"no active call {call_sid}")
        if call.status == CallStatus.IN_PROGRESS:
            await self._end(call, EndReason.REMOTE_HANGUP, "the far end hung up")
        elif call.direction == Direction.INBOUND:
            await self._end(call, EndReason.CANCELLED, "the caller hung up before an answer")
        else:
            await self._end(call, EndReason.REJECTED, "the far end declined the call")
        return call

    # ------------------------------------------------------------------ media legs

    def check_media_access(self, claims: Claims, call_sid: str) -> CoreCall:
        """Raise unless ``claims`` may open the media leg of ``call_sid``."""
        call = self.calls.get(call_sid)
        if call is None or call.status == CallStatus.COMPLETED:
            raise ProtocolError(ErrorCode.CALL_NOT_FOUND, f"no active call {call_sid}")
        if call.account_id != claims.account_id:
            raise ProtocolError(ErrorCode.CALL_NOT_FOUND, f"no active call {call_sid}")
        if call.operator_key != (claims.account_id, claims.operator_ref):
            raise ProtocolError(ErrorCode.FORBIDDEN, "this call belongs to another operator")
        return call

    async def attach_media(
        self, call: CoreCall, claims: Claims, peer: Peer, codecs: list[str] | None = None
    ) -> MediaLeg:
        self.check_media_access(claims, call.sid)
        old = call.media
        leg = MediaLeg(call, claims, peer, codec=choose_codec(codecs or []))
        call.media = leg
        if old is not None:
            with contextlib.suppress(Exception):
                await old.peer.close(CloseCode.MEDIA_LEG_REPLACED, "replaced by a newer media leg")
        self._disarm(call, "media")
        self._disarm(call, "reconnect")
        await peer.send(MediaReady(call_sid=call.sid, codec=leg.codec))
        if call.status == CallStatus.INITIATED:
            self._spawn(call, self._route(call))
        elif call.status == CallStatus.CONNECTING:
            assert call.far_end is not None
            await self._answered(call, call.far_end)
        return leg

    async def detach_media(self, leg: MediaLeg) -> None:
        call = leg.call
        if call.media is not leg:
            return
        call.media = None
        if call.status != CallStatus.COMPLETED:
            self._arm(
                call, "reconnect", self.timings.media_reconnect_window, self._media_lost, call
            )

    def media_audio(self, leg: MediaLeg, payload: bytes) -> None:
        """One audio frame from the operator, passed to the far end at once (synchronous:
        called for every frame as it is parsed, see :mod:`softphone.server.inline_ws`)."""
        call = leg.call
        leg.frames_in += 1
        if call.status == CallStatus.IN_PROGRESS and call.far_end is not None:
            call.far_end.on_audio(payload)

    async def media_dtmf(self, leg: MediaLeg, digits: str) -> None:
        call = leg.call
        call.dtmf.append(digits)
        self.store.add_dtmf(call.sid, digits, self._now())
        if call.status == CallStatus.IN_PROGRESS and call.far_end is not None:
            await call.far_end.on_dtmf(digits)

    def _send_pcm(self, call: CoreCall, samples: Samples) -> None:
        """Send simulated audio to the operator, encoded with the media leg's codec."""
        leg = call.media
        if leg is None or leg.peer.closed:
            return
        encode = encode_alaw if leg.codec == Codec.PCMA else encode_mulaw
        self._send_audio(call, encode(samples).tobytes())

    def _send_audio(self, call: CoreCall, payload: bytes) -> None:
        leg = call.media
        if leg is None or leg.peer.closed:
            return
        frame = encode_audio_frame(
            call.out_sequence, call.out_timestamp, payload, marker=leg.frames_out == 0
        )
        # The sequence advances for a dropped frame too: the operator's jitter buffer
        # counts it as lost, as after any gap.
        call.out_sequence = (call.out_sequence + 1) & 0xFFFF
        call.out_timestamp = (call.out_timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        if leg.peer.send_audio(frame):
            leg.frames_out += 1

    # ------------------------------------------------------------------ routing and ending

    async def _route(self, call: CoreCall) -> None:
        destination = self.network.route(call.to)
        if destination is None:
            await self._end(
                call,
                EndReason.FAILED,
                f"{call.to} is not reachable on the sandbox network"
                f" (try the echo line {self.network.describe()[0][0]})",
            )
            return
        await destination.connect(_Control(self, call))

    async def _ringing(self, call: CoreCall, early_media: bool) -> None:
        if call.status != CallStatus.INITIATED:
            return
        self._transition(call, CallStatus.RINGING)
        call.early_media = early_media
        self.store.update_call(call.sid, status=call.status.value)
        await self._notify_owner(call, CallRinging(call_sid=call.sid, early_media=early_media))

    async def _answered(self, call: CoreCall, far_end: FarEnd) -> None:
        if call.status == CallStatus.COMPLETED:
            await far_end.close()
            return
        self._transition(call, CallStatus.IN_PROGRESS)
        call.far_end = far_end
        far_end.attach(_Link(self, call))
        self.store.update_call(call.sid, status=call.status.value, answered_at=self._now())
        log.info(
            "call %s answered",
            call.sid,
            extra={"event": "call_answered", "call_sid": call.sid, "account": call.account_id},
        )
        await self._notify_owner(call, CallAnswered(call_sid=call.sid))
        if call.status == CallStatus.IN_PROGRESS:
            await far_end.start()

    async def _end(
        self,
        call: CoreCall,
        reason: EndReason,
        message: str,
        *,
        others: EndReason | None = None,
        by: set[OperatorSession] | None = None,
    ) -> None:
        """End ``call``: tell the owner and the sessions in ``by`` (``reason``) and any other
        offered operator (``others`` or ``reason``), close the media leg, store the record.
        Idempotent."""
        if call.status == CallStatus.COMPLETED:
            return
        self._transition(call, CallStatus.COMPLETED)
        for handle in call.timers.values():
            handle.cancel()
        call.timers.clear()
        current = asyncio.current_task()
        for task in call.tasks:
            if task is not current:
                task.cancel()
        self.store.update_call(
            call.sid,
            status=call.status.value,
            end_reason=reason.value,
            end_message=message,
            ended_at=self._now(),
        )
        log.info(
            "call %s ended reason=%s (%s)",
            call.sid,
            reason.value,
            message,
            extra={
                "event": "call_ended",
                "call_sid": call.sid,
                "account": call.account_id,
                "operator": call.operator_key[1] if call.operator_key else None,
                "reason": reason.value,
                "end_message": message,
            },
        )
        ended = CallEnded(call_sid=call.sid, reason=reason, message=message)
        await self._notify_owner(call, ended)
        other_reason = others or reason
        for session in list(call.offered):
            if session is not call.owner:
                mine = by is not None and session in by
                await self._send(
                    session,
                    CallEnded(
                        call_sid=call.sid,
                        reason=reason if mine else other_reason,
                        message=message,
                    ),
                )
        call.offered.clear()
        leg = call.media
        if leg is not None:
            with contextlib.suppress(Exception):
                await leg.peer.send(ended)
                await leg.peer.close(CloseCode.CALL_ENDED, "call ended")
        if call.far_end is not None:
            with contextlib.suppress(Exception):
                await call.far_end.close()
        call.ended.set()
        self.calls.pop(call.sid, None)

    async def _notify_owner(self, call: CoreCall, message: Message) -> None:
        owner = call.owner
        if owner is None:
            return
        if owner.closed:
            live = self._live_session(owner.operator_key)
            if live is None:
                return
            call.owner = owner = live
        await self._send(owner, message)

    async def _ring_timeout(self, call: CoreCall) -> None:
        await self._end(call, EndReason.NO_ANSWER, "nobody answered")

    async def _media_timeout(self, call: CoreCall) -> None:
        await self._end(call, EndReason.FAILED, "the operator's media leg never opened")

    async def _media_lost(self, call: CoreCall) -> None:
        await self._end(call, EndReason.FAILED, "the operator's media leg was lost")

    async def shutdown(self, message: str = "the core is shutting down") -> None:
        for call in list(self.calls.values()):
            await self._end(call, EndReason.FAILED, message)
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ helpers

    def _transition(self, call: CoreCall, status: CallStatus) -> None:
        if status not in CALL_TRANSITIONS[call.status]:
            raise ProtocolError(
                ErrorCode.CALL_NOT_AVAILABLE,
                f"call {call.sid} cannot go from {call.status.value} to {status.value}",
            )
        call.status = status

    def _record_new(self, call: CoreCall, operator_ref: str | None) -> None:
        self.store.insert_call(
            CallRow(
                call_sid=call.sid,
                account_id=call.account_id,
                direction=call.direction.value,
                from_number=call.from_,
                to_number=call.to,
                phone_number_id=call.phone_number_id,
                status=call.status.value,
                end_reason=None,
                end_message=None,
                operator_ref=operator_ref,
                params=call.params,
                created_at=self._now(),
                answered_at=None,
                ended_at=None,
            )
        )

    async def _send(self, session: OperatorSession, message: Message) -> None:
        if session.closed or session.peer.closed:
            return
        try:
            await session.peer.send(message)
        except ConnectionError:
            log.debug("send to closed session %s dropped", session.session_id)

    def _arm(
        self,
        call: CoreCall,
        name: str,
        delay: float,
        action: Callable[[CoreCall], Coroutine[Any, Any, None]],
        arg: CoreCall,
    ) -> None:
        self._disarm(call, name)
        loop = asyncio.get_running_loop()
        call.timers[name] = loop.call_later(delay, lambda: self._spawn(call, action(arg)))

    def _disarm(self, call: CoreCall, name: str) -> None:
        handle = call.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, call: CoreCall, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        call.tasks.add(task)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            call.tasks.discard(t)
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("call %s task failed", call.sid, exc_info=t.exception())

        task.add_done_callback(done)


class _Control(CallControl):
    def __init__(self, core: Core, call: CoreCall) -> None:
        self._core = core
        self._call = call

    async def ringing(self, *, early_media: bool) -> None:
        await self._core._ringing(self._call, early_media)

    async def send_pcm(self, samples: Samples) -> None:
        call = self._call
        if call.status == CallStatus.RINGING and call.early_media:
            self._core._send_pcm(call, samples)

    async def answer(self, far_end: FarEnd) -> None:
        await self._core._answered(self._call, far_end)

    async def end(self, reason: EndReason, message: str) -> None:
        await self._core._end(self._call, reason, message)


class _Link:
    def __init__(self, core: Core, call: CoreCall) -> None:
        self._core = core
        self._call = call

    def send_audio(self, payload: bytes) -> None:
        if self._call.status == CallStatus.IN_PROGRESS:
            self._core._send_audio(self._call, payload)

    async def send_pcm(self, samples: Samples) -> None:
        if self._call.status == CallStatus.IN_PROGRESS:
            self._core._send_pcm(self._call, samples)

    async def hangup(self) -> None:
        if self._call.status != CallStatus.COMPLETED:
            await self._core.remote_hangup(self._call.sid)

    async def send_message(self, content: str, content_type: str = "text/plain") -> None:
        if self._call.status == CallStatus.IN_PROGRESS:
            await self._core._send_message(self._call, content, content_type)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._call.status == CallStatus.COMPLETED:
            coro.close()
            return
        self._core._spawn(self._call, coro)
