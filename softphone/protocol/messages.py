"""The JSON messages of protocol v1, their validation and codec (sans-I/O).

Every WebSocket text frame is one JSON object with a ``type`` field naming one of the
classes below. Field names are camelCase on the wire. Unknown *fields* are ignored (a
minor version may add some); an unknown *type*, a missing or ill-typed field, invalid
JSON or an oversized message raise :class:`ProtocolError` with a stable code. Nothing in
this module touches a socket, a clock or a thread.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from softphone.protocol.errors import ErrorCode, ProtocolError

MAX_MESSAGE_BYTES: Final = 16 * 1024
"""Largest text frame either end accepts on any channel."""

E164_PATTERN: Final = re.compile(r"\+[1-9][0-9]{1,14}")
CALL_SID_PATTERN: Final = r"^CA[0-9a-f]{32}\Z"
DTMF_PATTERN: Final = r"^[0-9A-D*#w]{1,64}\Z"

Identifier = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}\Z")]
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
CallSid = Annotated[str, msgspec.Meta(pattern=CALL_SID_PATTERN)]
NumberText = Annotated[str, msgspec.Meta(max_length=32)]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Params = Annotated[
    dict[
        Annotated[str, msgspec.Meta(min_length=1, max_length=64)],
        Annotated[str, msgspec.Meta(max_length=512)],
    ],
    msgspec.Meta(max_length=32),
]
NumberIds = Annotated[list[Identifier], msgspec.Meta(max_length=100)]
MAX_CONTENT_CHARS: Final = 4096
ContentType = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9.+-]+/[a-z0-9.+-]+\Z")]


class Channel(StrEnum):
    """The two kinds of WebSocket of protocol v1."""

    PRESENCE = "presence"
    MEDIA = "media"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class EndReason(StrEnum):
    """Why a call ended, as seen by the operator who receives ``call_ended``."""

    HANGUP = "hangup"
    REMOTE_HANGUP = "remote_hangup"
    TAKEN_BY_OTHER = "taken_by_other"
    REJECTED = "rejected"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    OFFLINE = "offline"
    IGNORED = "ignored"
    CANCELLED = "cancelled"


class Codec(StrEnum):
    """G.711 payloads of audio frames: μ-law (every v1 peer supports it) and A-law."""

    PCMU = "PCMU"
    PCMA = "PCMA"


def choose_codec(preferences: list[str]) -> Codec:
    """The first codec of the client's ``hello.codecs`` this end supports, else PCMU."""
    for name in preferences:
        if name in Codec.__members__:
            return Codec(name)
    return Codec.PCMU


def validate_e164(number: str) -> str:
    """Return ``number`` if it is E.164 (``+`` then 2 to 15 digits), else raise INVALID_NUMBER."""
    if not isinstance(number, str) or not E164_PATTERN.fullmatch(number):
        raise ProtocolError(
            ErrorCode.INVALID_NUMBER,
            f"{number!r} is not an E.164 number (a '+' then 2 to 15 digits, e.g. +15550100)",
        )
    return number


class Message(msgspec.Struct, tag_field="type", rename="camel", frozen=True, kw_only=True):
    """Base of every v1 message. ``channels`` and ``sender`` say where it may travel."""

    channels: ClassVar[frozenset[Channel]] = frozenset()
    sender: ClassVar[Literal["client", "core"]]


_BOTH: Final = frozenset({Channel.PRESENCE, Channel.MEDIA})
_PRESENCE: Final = frozenset({Channel.PRESENCE})
_MEDIA: Final = frozenset({Channel.MEDIA})


# --------------------------------------------------------------------------- client -> core


class Hello(Message, tag="hello", frozen=True):
    """First message on every WebSocket: the protocol version the client speaks."""

    channels = _BOTH
    sender = "client"
    protocol: int
    client: ShortText = ""
    heartbeat_interval: Annotated[float, msgspec.Meta(ge=1, le=300)] = 25.0
    codecs: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=16)]], msgspec.Meta(max_length=8)
    ] = msgspec.field(default_factory=lambda: ["PCMU"])


class Ping(Message, tag="ping", frozen=True):
    """Heartbeat; the core answers ``pong`` echoing ``ts`` (used for RTT on media legs)."""

    channels = _BOTH
    sender = "client"
    ts: float


class SetAvailability(Message, tag="set_availability", frozen=True):
    """Go online on exactly these phone-number ids (an empty list means online on none)."""

    channels = _PRESENCE
    sender = "client"
    id: RequestId
    phone_number_ids: NumberIds


class Dial(Message, tag="dial", frozen=True):
    """Place an outbound call from ``caller_id`` (one of the token's numbers) to ``to``."""

    channels = _PRESENCE
    sender = "client"
    id: RequestId
    to: NumberText
    caller_id: NumberText | None = None
    params: Params = msgspec.field(default_factory=dict)


class Accept(Message, tag="accept", frozen=True):
    channels = _PRESENCE
    sender = "client"
    id: RequestId
    call_sid: CallSid


class Reject(Message, tag="reject", frozen=True):
    """Decline an offer. ``rejected`` ends the call for the caller; ``busy`` only removes this
    operator from the offer (sent automatically by a client that already has a call)."""

    channels = _PRESENCE
    sender = "client"
    id: RequestId
    call_sid: CallSid
    reason: Literal["rejected", "busy"] = "rejected"


class Hangup(Message, tag="hangup", frozen=True):
    """End a call (or cancel an unanswered outbound call). Valid on either channel."""

    channels = _BOTH
    sender = "client"
    id: RequestId
    call_sid: CallSid


class UpdateToken(Message, tag="update_token", frozen=True):
    """Replace the session token of an open WebSocket before the old one expires."""

    channels = _BOTH
    sender = "client"
    id: RequestId
    token: Token


class Mute(Message, tag="mute", frozen=True):
    """Tell the core the operator muted (it then expects silence) or unmuted."""

    channels = _MEDIA
    sender = "client"
    muted: bool


class Dtmf(Message, tag="dtmf", frozen=True):
    """Send DTMF digits to the far end (0-9, *, #, A-D; 'w' is a 500 ms pause)."""

    channels = _MEDIA
    sender = "client"
    digits: Annotated[str, msgspec.Meta(pattern=DTMF_PATTERN)]


class SendMessage(Message, tag="send_message", frozen=True):
    """Send a message to the far end of a call (its server-side application). Answered with
    ``ack`` once delivered."""

    channels = _BOTH
    sender = "client"
    id: RequestId
    call_sid: CallSid
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONTENT_CHARS)]
    content_type: ContentType = "text/plain"


class FeedbackIssue(StrEnum):
    """What went wrong in a call, as the operator reports it with ``post_feedback``."""

    AUDIO_LATENCY = "audio-latency"
    CHOPPY_AUDIO = "choppy-audio"
    DROPPED_CALL = "dropped-call"
    ECHO = "echo"
    NOISY_CALL = "noisy-call"
    ONE_WAY_AUDIO = "one-way-audio"


class PostFeedback(Message, tag="post_feedback", frozen=True):
    """The operator's rating of a call (usually after it ended), stored by the core."""

    channels = _PRESENCE
    sender = "client"
    id: RequestId
    call_sid: CallSid
    score: Annotated[int, msgspec.Meta(ge=1, le=5)]
    issue: FeedbackIssue | None = None


# --------------------------------------------------------------------------- core -> client


class Welcome(Message, tag="welcome", frozen=True):
    """Answer to ``hello`` on the presence channel."""

    channels = _PRESENCE
    sender = "core"
    protocol: int
    session_id: str
    account_id: str
    operator_ref: str
    display_name: str
    heartbeat_interval: float
    server_time: str
    expires_at: str


class Pong(Message, tag="pong", frozen=True):
    channels = _BOTH
    sender = "core"
    ts: float
    server_time: str


class Availability(Message, tag="availability", frozen=True):
    """Which numbers the operator is online on now (answer to ``set_availability``)."""

    channels = _PRESENCE
    sender = "core"
    accepted: list[str]
    rejected: list[str]
    reply_to: RequestId | None = None


class CallCreated(Message, tag="call_created", frozen=True):
    """Answer to ``dial``: the call exists; open its media leg now."""

    channels = _PRESENCE
    sender = "core"
    reply_to: RequestId
    call_sid: CallSid
    direction: Direction
    from_: str = msgspec.field(name="from")
    to: str
    params: dict[str, str] = msgspec.field(default_factory=dict)


class CallOffer(Message, tag="call_offer", frozen=True):
    """An inbound call is ringing on a number this operator is online on."""

    channels = _PRESENCE
    sender = "core"
    call_sid: CallSid
    from_: str = msgspec.field(name="from")
    to: str
    phone_number_id: str
    params: dict[str, str] = msgspec.field(default_factory=dict)


class CallRinging(Message, tag="call_ringing", frozen=True):
    """The far end of an outbound call is being alerted."""

    channels = _PRESENCE
    sender = "core"
    call_sid: CallSid
    early_media: bool = False


class CallAnswered(Message, tag="call_answered", frozen=True):
    """The call is answered and bridged: audio flows both ways from now on."""

    channels = _PRESENCE
    sender = "core"
    call_sid: CallSid


class CallEnded(Message, tag="call_ended", frozen=True):
    """The call is over for this operator. Sent on presence and, if open, on the media leg."""

    channels = _BOTH
    sender = "core"
    call_sid: CallSid
    reason: EndReason
    message: str = ""


class MediaReady(Message, tag="media_ready", frozen=True):
    """Answer to ``hello`` on a media leg: the audio format of the binary frames."""

    channels = _MEDIA
    sender = "core"
    call_sid: CallSid
    codec: Codec = Codec.PCMU
    sample_rate: int = 8000
    frame_ms: int = 20


class CallMessage(Message, tag="call_message", frozen=True):
    """A message from the far end of a call (e.g. the digits an IVR or the echo line heard,
    with ``contentType`` ``application/dtmf``). Sent on the media leg, or on presence while
    the call has no media leg."""

    channels = _BOTH
    sender = "core"
    call_sid: CallSid
    content: str
    content_type: str = "text/plain"


class Ack(Message, tag="ack", frozen=True):
    """Success answer to a request that has no richer answer (accept, reject, hangup...)."""

    channels = _BOTH
    sender = "core"
    reply_to: RequestId


class Error(Message, tag="error", frozen=True):
    """A refused request (``reply_to`` set) or a problem with what the client sent."""

    channels = _BOTH
    sender = "core"
    code: str
    message: str
    reply_to: RequestId | None = None


CLIENT_MESSAGES: Final[tuple[type[Message], ...]] = (
    Hello,
    Ping,
    SetAvailability,
    Dial,
    Accept,
    Reject,
    Hangup,
    UpdateToken,
    Mute,
    Dtmf,
    SendMessage,
    PostFeedback,
)
CORE_MESSAGES: Final[tuple[type[Message], ...]] = (
    Welcome,
    Pong,
    Availability,
    CallCreated,
    CallOffer,
    CallRinging,
    CallAnswered,
    CallEnded,
    MediaReady,
    CallMessage,
    Ack,
    Error,
)
ALL_MESSAGES: Final = CLIENT_MESSAGES + CORE_MESSAGES


def message_type(cls: type[Message]) -> str:
    """The wire ``type`` of a message class."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


_REGISTRY: Final[dict[str, type[Message]]] = {message_type(cls): cls for cls in ALL_MESSAGES}
_DECODERS: Final[dict[type[Message], msgspec.json.Decoder[Any]]] = {
    cls: msgspec.json.Decoder(cls) for cls in ALL_MESSAGES
}
_ENCODER: Final = msgspec.json.Encoder()


class _Envelope(msgspec.Struct):
    type: str


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)


def encode_message(message: Message) -> str:
    """Serialise a message to the JSON text sent in one WebSocket text frame."""
    return _ENCODER.encode(message).decode()


def decode_message(
    data: str | bytes,
    *,
    channel: Channel,
    sender: Literal["client", "core"],
) -> Message:
    """Parse and validate one text frame received on ``channel`` from ``sender``.

    Raises :class:`ProtocolError` with MESSAGE_TOO_LARGE, MALFORMED_MESSAGE,
    UNKNOWN_MESSAGE_TYPE or UNEXPECTED_MESSAGE; never anything else.
    """
    try:
        raw = data.encode() if isinstance(data, str) else data
    except UnicodeEncodeError:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "text is not valid Unicode") from None
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"message of {len(raw)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}",
        )
    try:
        envelope = _ENVELOPE.decode(raw)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise ProtocolError(
            ErrorCode.MALFORMED_MESSAGE, f"not a JSON object with a string 'type': {exc}"
        ) from None
    cls = _REGISTRY.get(envelope.type)
    if cls is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            f"unknown message type {envelope.type[:40]!r}",
        )
    if cls.sender != sender or channel not in cls.channels:
        raise ProtocolError(
            ErrorCode.UNEXPECTED_MESSAGE,
            f"{envelope.type!r} is not sent by the {sender} on the {channel} channel",
        )
    try:
        message: Message = _DECODERS[cls].decode(raw)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise ProtocolError(
            ErrorCode.MALFORMED_MESSAGE, f"invalid {envelope.type!r}: {exc}"
        ) from None
    return message


def request_id_of(data: str | bytes) -> str | None:
    """Best-effort ``id`` of a message that failed validation, so the error can reply to it."""
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    if isinstance(value, dict):
        rid = value.get("id")
        if isinstance(rid, str) and 0 < len(rid) <= 64:
            return rid
    return None
