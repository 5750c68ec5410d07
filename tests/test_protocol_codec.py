"""Pure tests of the protocol v1 codec: messages, validation, audio frames, versions.

No sockets, no clock: everything here exercises ``softphone.protocol`` directly, with
hand-written tables for the documented behaviour and Hypothesis for the "never raises
anything but ProtocolError" contract of the decoders.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softphone.protocol import (
    ALL_MESSAGES,
    API_PREFIX,
    CLIENT_MESSAGES,
    CORE_MESSAGES,
    FRAME_BYTES,
    HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Accept,
    Ack,
    AudioFrame,
    Availability,
    CallAnswered,
    CallCreated,
    CallEnded,
    CallMessage,
    CallOffer,
    CallRinging,
    Channel,
    Codec,
    Dial,
    Direction,
    Dtmf,
    EndReason,
    Error,
    ErrorCode,
    FeedbackIssue,
    Hangup,
    Hello,
    MediaReady,
    Message,
    Mute,
    Ping,
    Pong,
    PostFeedback,
    ProtocolError,
    Reject,
    SendMessage,
    SetAvailability,
    UpdateToken,
    Welcome,
    audio_payload,
    check_version,
    decode_audio_frame,
    decode_message,
    encode_audio_frame,
    encode_message,
    message_type,
    path_version,
    request_id_of,
    validate_e164,
)

Sender = Literal["client", "core"]

SID = "CA" + "0123456789abcdef" * 2
SENDERS: tuple[Sender, ...] = ("client", "core")
DECODE_CODES = frozenset(
    {
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.MALFORMED_MESSAGE,
        ErrorCode.UNKNOWN_MESSAGE_TYPE,
        ErrorCode.UNEXPECTED_MESSAGE,
    }
)

# One valid, non-trivial instance of every message class (every optional field set).
SAMPLES: dict[type[Message], Message] = {
    Hello: Hello(protocol=1, client="pytest-client/1.0", heartbeat_interval=15.0),
    Ping: Ping(ts=1234.5),
    SetAvailability: SetAvailability(id="r1", phone_number_ids=["pn_15550150", "pn_2"]),
    Dial: Dial(id="r2", to="+15550100", caller_id="+15550150", params={"crmId": "42"}),
    Accept: Accept(id="r3", call_sid=SID),
    Reject: Reject(id="r4", call_sid=SID, reason="busy"),
    Hangup: Hangup(id="r5", call_sid=SID),
    UpdateToken: UpdateToken(id="r6", token="aaa.bbb.ccc"),
    Mute: Mute(muted=True),
    Dtmf: Dtmf(digits="0123456789*#ABCDw"),
    PostFeedback: PostFeedback(id="r8", call_sid=SID, score=2, issue=FeedbackIssue.CHOPPY_AUDIO),
    SendMessage: SendMessage(
        id="r7", call_sid=SID, content='{"ticket": 42}', content_type="application/json"
    ),
    Welcome: Welcome(
        protocol=1,
        session_id="sess_1",
        account_id="acct_1",
        operator_ref="op-1",
        display_name="Operator One",
        heartbeat_interval=25.0,
        server_time="2024-01-01T00:00:00Z",
        expires_at="2024-01-01T01:00:00Z",
    ),
    Pong: Pong(ts=1234.5, server_time="2024-01-01T00:00:00Z"),
    Availability: Availability(accepted=["pn_1"], rejected=["pn_x"], reply_to="r1"),
    CallCreated: CallCreated(
        reply_to="r2",
        call_sid=SID,
        direction=Direction.OUTBOUND,
        from_="+15550150",
        to="+15550100",
        params={"crmId": "42"},
    ),
    CallOffer: CallOffer(
        call_sid=SID,
        from_="+15550100",
        to="+15550150",
        phone_number_id="pn_15550150",
        params={"queue": "sales"},
    ),
    CallRinging: CallRinging(call_sid=SID, early_media=True),
    CallAnswered: CallAnswered(call_sid=SID),
    CallEnded: CallEnded(call_sid=SID, reason=EndReason.REMOTE_HANGUP, message="bye"),
    MediaReady: MediaReady(call_sid=SID, codec=Codec.PCMU, sample_rate=8000, frame_ms=20),
    CallMessage: CallMessage(call_sid=SID, content="5", content_type="application/dtmf"),
    Ack: Ack(reply_to="r5"),
    Error: Error(code="BUSY", message="the operator already has an active call", reply_to="r2"),
}

TYPES = sorted(message_type(cls) for cls in ALL_MESSAGES)


def camel(name: str) -> str:
    """The documented wire name of a struct field: camelCase, ``from_`` -> ``from``."""
    if name == "from_":
        return "from"
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


FIELD_NAMES = sorted({camel(f) for cls in ALL_MESSAGES for f in cls.__struct_fields__})


def decode(data: str | bytes, channel: Channel = Channel.PRESENCE, sender: Sender = "client"):
    return decode_message(data, channel=channel, sender=sender)


def assert_code(
    data: str | bytes,
    code: ErrorCode,
    channel: Channel = Channel.PRESENCE,
    sender: Sender = "client",
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message(data, channel=channel, sender=sender)
    assert info.value.code is code, info.value
    assert isinstance(info.value.message, str)
    assert info.value.message


def try_decode(data: str | bytes, channel: Channel, sender: Sender) -> Message | ProtocolError:
    """decode_message, with a ProtocolError returned instead of raised (anything else escapes)."""
    try:
        return decode_message(data, channel=channel, sender=sender)
    except ProtocolError as exc:
        return exc


def check_decode_contract(data: str | bytes) -> None:
    """decode_message returns a valid Message or raises ProtocolError, on every channel/sender."""
    for channel in Channel:
        for sender in SENDERS:
            result = try_decode(data, channel, sender)
            if isinstance(result, ProtocolError):
                assert isinstance(result.code, ErrorCode)
                assert result.code in DECODE_CODES, result
                assert isinstance(result.message, str)
                continue
            cls = type(result)
            assert cls in ALL_MESSAGES
            assert cls.sender == sender
            assert channel in cls.channels
            assert decode_message(encode_message(result), channel=channel, sender=sender) == result


# --------------------------------------------------------------------------- registry


def test_samples_cover_every_message_class() -> None:
    assert set(SAMPLES) == set(ALL_MESSAGES)
    assert len(ALL_MESSAGES) == len(set(ALL_MESSAGES))


def test_message_types_are_unique_snake_case_and_well_partitioned() -> None:
    assert len(TYPES) == len(set(TYPES))
    assert set(TYPES) == {
        "hello",
        "ping",
        "set_availability",
        "dial",
        "accept",
        "reject",
        "hangup",
        "update_token",
        "mute",
        "dtmf",
        "send_message",
        "post_feedback",
        "welcome",
        "pong",
        "availability",
        "call_created",
        "call_offer",
        "call_ringing",
        "call_answered",
        "call_ended",
        "media_ready",
        "call_message",
        "ack",
        "error",
    }
    assert all(cls.sender == "client" for cls in CLIENT_MESSAGES)
    assert all(cls.sender == "core" for cls in CORE_MESSAGES)
    assert set(CLIENT_MESSAGES).isdisjoint(CORE_MESSAGES)
    for cls in ALL_MESSAGES:
        assert cls.channels, cls
        assert cls.channels <= set(Channel)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=message_type)
def test_every_message_round_trips_on_its_channels(cls: type[Message]) -> None:
    sample = SAMPLES[cls]
    text = encode_message(sample)
    assert isinstance(text, str)
    for channel in cls.channels:
        assert decode(text, channel, cls.sender) == sample
        assert decode(text.encode(), channel, cls.sender) == sample


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=message_type)
def test_wire_json_uses_type_tag_and_camel_case(cls: type[Message]) -> None:
    wire = json.loads(encode_message(SAMPLES[cls]))
    assert isinstance(wire, dict)
    assert wire["type"] == message_type(cls)
    expected = {"type"} | {camel(name) for name in cls.__struct_fields__}
    assert set(wire) == expected
    for key in wire:
        assert "_" not in key, f"{key!r} is not camelCase"
    if "from_" in cls.__struct_fields__:
        assert "from" in wire
        assert "from_" not in wire


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=message_type)
def test_message_is_refused_from_the_wrong_sender_or_channel(cls: type[Message]) -> None:
    text = encode_message(SAMPLES[cls])
    other: Sender = "core" if cls.sender == "client" else "client"
    for channel in Channel:
        assert_code(text, ErrorCode.UNEXPECTED_MESSAGE, channel, other)
        if channel not in cls.channels:
            assert_code(text, ErrorCode.UNEXPECTED_MESSAGE, channel, cls.sender)


GOLDEN: list[tuple[Message, dict[str, Any]]] = [
    (
        Dial(id="r2", to="+15550100", caller_id="+15550150", params={"crmId": "42"}),
        {
            "type": "dial",
            "id": "r2",
            "to": "+15550100",
            "callerId": "+15550150",
            "params": {"crmId": "42"},
        },
    ),
    (
        CallCreated(
            reply_to="r2",
            call_sid=SID,
            direction=Direction.OUTBOUND,
            from_="+15550150",
            to="+15550100",
        ),
        {
            "type": "call_created",
            "replyTo": "r2",
            "callSid": SID,
            "direction": "outbound",
            "from": "+15550150",
            "to": "+15550100",
            "params": {},
        },
    ),
    (
        SetAvailability(id="a1", phone_number_ids=["pn_1"]),
        {"type": "set_availability", "id": "a1", "phoneNumberIds": ["pn_1"]},
    ),
    (
        Hello(protocol=1),
        {
            "type": "hello",
            "protocol": 1,
            "client": "",
            "heartbeatInterval": 25.0,
            "codecs": ["PCMU"],
        },
    ),
    (Error(code="BUSY", message="m"), {"type": "error", "code": "BUSY", "message": "m"}),
]


@pytest.mark.parametrize(("message", "wire"), GOLDEN, ids=[w["type"] for _, w in GOLDEN])
def test_golden_wire_form(message: Message, wire: dict[str, Any]) -> None:
    encoded = json.loads(encode_message(message))
    if wire["type"] == "error":
        # replyTo may be present as null or omitted; both are acceptable on the wire.
        assert encoded.pop("replyTo", None) is None
    assert encoded == wire
    cls = type(message)
    channel = next(iter(sorted(cls.channels)))
    assert decode(json.dumps(wire), channel, cls.sender) == message


def test_unknown_extra_fields_are_ignored() -> None:
    text = json.dumps(
        {
            "type": "set_availability",
            "id": "r9",
            "phoneNumberIds": ["pn_1"],
            "addedInV1_7": {"nested": [1, 2, {"x": None}]},
            "another": None,
        }
    )
    assert decode(text) == SetAvailability(id="r9", phone_number_ids=["pn_1"])
    ping = decode('{"ts": 3, "zzz": true, "type": "ping"}', Channel.MEDIA)
    assert ping == Ping(ts=3.0)


def test_optional_fields_take_their_defaults() -> None:
    assert decode('{"type":"hello","protocol":1}') == Hello(protocol=1)
    dial = decode('{"type":"dial","id":"x","to":"+15550100"}')
    assert dial == Dial(id="x", to="+15550100", caller_id=None, params={})
    media_ready = decode(json.dumps({"type": "media_ready", "callSid": SID}), Channel.MEDIA, "core")
    assert media_ready == MediaReady(call_sid=SID)


# --------------------------------------------------------------------------- malformed input


MALFORMED: list[tuple[str, str, ErrorCode]] = [
    # (id, text, code) -- all decoded on presence from a client unless the text needs media.
    ("invalid-json", "not json at all", ErrorCode.MALFORMED_MESSAGE),
    ("empty", "", ErrorCode.MALFORMED_MESSAGE),
    ("truncated", '{"type":"ping","ts":1', ErrorCode.MALFORMED_MESSAGE),
    ("array", '[{"type":"ping","ts":1}]', ErrorCode.MALFORMED_MESSAGE),
    ("number", "42", ErrorCode.MALFORMED_MESSAGE),
    ("string", '"ping"', ErrorCode.MALFORMED_MESSAGE),
    ("null", "null", ErrorCode.MALFORMED_MESSAGE),
    ("missing-type", '{"ts":1}', ErrorCode.MALFORMED_MESSAGE),
    ("type-int", '{"type":5,"ts":1}', ErrorCode.MALFORMED_MESSAGE),
    ("type-null", '{"type":null}', ErrorCode.MALFORMED_MESSAGE),
    ("type-list", '{"type":["ping"],"ts":1}', ErrorCode.MALFORMED_MESSAGE),
    ("unknown-type", '{"type":"frobnicate"}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
    ("type-wrong-case", '{"type":"Ping","ts":1}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
    ("type-empty", '{"type":""}', ErrorCode.UNKNOWN_MESSAGE_TYPE),
    ("missing-field", '{"type":"ping"}', ErrorCode.MALFORMED_MESSAGE),
    ("wrong-type-ts", '{"type":"ping","ts":"now"}', ErrorCode.MALFORMED_MESSAGE),
    ("wrong-type-protocol", '{"type":"hello","protocol":"1"}', ErrorCode.MALFORMED_MESSAGE),
    ("bool-protocol", '{"type":"hello","protocol":true}', ErrorCode.MALFORMED_MESSAGE),
    ("heartbeat-too-small", '{"type":"hello","protocol":1,"heartbeatInterval":0.5}', None),
    ("snake-case-field", '{"type":"set_availability","id":"a","phone_number_ids":[]}', None),
    ("ids-not-list", '{"type":"set_availability","id":"a","phoneNumberIds":"pn_1"}', None),
    ("bad-number-id", '{"type":"set_availability","id":"a","phoneNumberIds":["a b"]}', None),
    ("empty-request-id", '{"type":"set_availability","id":"","phoneNumberIds":[]}', None),
    ("long-request-id", json.dumps({"type": "hangup", "id": "x" * 65, "callSid": SID}), None),
    ("short-callsid", '{"type":"accept","id":"1","callSid":"CA123"}', None),
    ("upper-callsid", json.dumps({"type": "accept", "id": "1", "callSid": SID.upper()}), None),
    ("callsid-prefix", json.dumps({"type": "accept", "id": "1", "callSid": "XX" + SID[2:]}), None),
    (
        "reject-reason",
        json.dumps({"type": "reject", "id": "1", "callSid": SID, "reason": "x"}),
        None,
    ),
    ("params-not-str", '{"type":"dial","id":"1","to":"+15550100","params":{"a":1}}', None),
    ("to-too-long", json.dumps({"type": "dial", "id": "1", "to": "+1" * 20}), None),
    ("empty-token", '{"type":"update_token","id":"1","token":""}', None),
]


@pytest.mark.parametrize(
    ("text", "code"),
    [(t, c or ErrorCode.MALFORMED_MESSAGE) for _, t, c in MALFORMED],
    ids=[i for i, _, _ in MALFORMED],
)
def test_malformed_messages_raise_the_documented_code(text: str, code: ErrorCode) -> None:
    assert_code(text, code, Channel.PRESENCE, "client")
    assert_code(text.encode(), code, Channel.PRESENCE, "client")


@pytest.mark.parametrize(
    "digits",
    ["", "12x", "1 2", "abc", "E", "0" * 65, "１２"],
    ids=["empty", "letter-x", "space", "lowercase", "E", "too-long", "fullwidth"],
)
def test_bad_dtmf_is_malformed(digits: str) -> None:
    text = json.dumps({"type": "dtmf", "digits": digits})
    assert_code(text, ErrorCode.MALFORMED_MESSAGE, Channel.MEDIA, "client")


@pytest.mark.parametrize("digits", ["1", "0123456789", "*#", "ABCD", "1w2w3", "9" * 64])
def test_good_dtmf_is_accepted(digits: str) -> None:
    assert decode(json.dumps({"type": "dtmf", "digits": digits}), Channel.MEDIA) == Dtmf(
        digits=digits
    )


@pytest.mark.parametrize(
    ("text", "channel", "sender"),
    [
        ('{"type":"pong","ts":1,"serverTime":"x"}', Channel.PRESENCE, "client"),
        (json.dumps({"type": "call_ended", "callSid": SID}), Channel.MEDIA, "client"),
        ('{"type":"ack","replyTo":"r1"}', Channel.PRESENCE, "client"),
        ('{"type":"ping","ts":1}', Channel.PRESENCE, "core"),
        ('{"type":"mute","muted":true}', Channel.PRESENCE, "client"),
        ('{"type":"dtmf","digits":"1"}', Channel.PRESENCE, "client"),
        (json.dumps({"type": "media_ready", "callSid": SID}), Channel.PRESENCE, "core"),
        ('{"type":"set_availability","id":"1","phoneNumberIds":[]}', Channel.MEDIA, "client"),
        ('{"type":"dial","id":"1","to":"+15550100"}', Channel.MEDIA, "client"),
        (
            json.dumps(
                {
                    "type": "call_offer",
                    "callSid": SID,
                    "from": "+1",
                    "to": "+2",
                    "phoneNumberId": "p",
                }
            ),
            Channel.MEDIA,
            "core",
        ),
    ],
    ids=[
        "core-msg-from-client",
        "core-msg-from-client-media",
        "ack-from-client",
        "client-msg-from-core",
        "mute-on-presence",
        "dtmf-on-presence",
        "media-ready-on-presence",
        "set-availability-on-media",
        "dial-on-media",
        "call-offer-on-media",
    ],
)
def test_wrong_sender_or_channel_is_unexpected(text: str, channel: Channel, sender: Sender) -> None:
    assert_code(text, ErrorCode.UNEXPECTED_MESSAGE, channel, sender)


def test_unexpected_is_checked_before_field_validation() -> None:
    # A media-only type on presence is UNEXPECTED even if its fields are also wrong.
    assert_code('{"type":"mute"}', ErrorCode.UNEXPECTED_MESSAGE, Channel.PRESENCE, "client")


def _padded_ping(size: int) -> str:
    base = '{"type":"ping","ts":1,"pad":""}'
    text = base[:-2] + "x" * (size - len(base)) + '"}'
    assert len(text.encode()) == size
    return text


def test_message_size_limit_boundary() -> None:
    assert decode(_padded_ping(MAX_MESSAGE_BYTES)) == Ping(ts=1.0)
    assert_code(
        _padded_ping(MAX_MESSAGE_BYTES + 1), ErrorCode.MESSAGE_TOO_LARGE, Channel.PRESENCE, "client"
    )
    big = _padded_ping(MAX_MESSAGE_BYTES + 1).encode()
    assert_code(big, ErrorCode.MESSAGE_TOO_LARGE, Channel.MEDIA, "core")
    # Even an oversized non-JSON blob is reported as too large, not as malformed.
    assert_code("x" * (MAX_MESSAGE_BYTES * 2), ErrorCode.MESSAGE_TOO_LARGE)


def test_message_size_limit_counts_utf8_bytes_not_characters() -> None:
    text = '{"type":"ping","ts":1,"pad":"' + "é" * (MAX_MESSAGE_BYTES // 2) + '"}'
    assert len(text) < MAX_MESSAGE_BYTES < len(text.encode())
    assert_code(text, ErrorCode.MESSAGE_TOO_LARGE, Channel.PRESENCE, "client")


def test_non_utf8_bytes_are_malformed() -> None:
    assert_code(b"\xff\xfe\x00", ErrorCode.MALFORMED_MESSAGE)
    assert_code('{"type":"ping","ts":1}'.encode("utf-16"), ErrorCode.MALFORMED_MESSAGE)
    # Invalid UTF-8 inside an ignored field may be skipped, but must never escape as non-
    # ProtocolError.
    check_decode_contract(b'{"type":"ping","ts":1,"x":"\xff"}')


# Regression guard; the bug was: decode_message(bytes)
# raises UnicodeDecodeError (not ProtocolError) when a string field that is decoded (e.g. dial.id,
# dial.params values, error.code) holds invalid UTF-8; msgspec raises UnicodeDecodeError, which
# decode_message does not catch.
@pytest.mark.parametrize(
    "data",
    [
        b'{"type":"dial","id":"\xff","to":"+15550100"}',
        b'{"type":"dial","id":"a","to":"+15550100","params":{"k":"\xc3"}}',
    ],
    ids=["dial-id", "dial-params"],
)
def test_invalid_utf8_in_a_string_field_is_malformed(data: bytes) -> None:
    assert_code(data, ErrorCode.MALFORMED_MESSAGE)


def test_duplicate_type_keys_never_smuggle_another_message() -> None:
    # Whatever order, the decoded class must match the tag msgspec finally validates.
    for text in ('{"type":"ping","ts":1,"type":"hello"}', '{"type":"hello","type":"ping","ts":1}'):
        check_decode_contract(text)


# Regression guard; the bug was: decode_message raises
# RecursionError (not ProtocolError) for a message under MAX_MESSAGE_BYTES whose JSON nests ~1000
# levels deep, even in an ignored field (softphone/protocol/messages.py decode_message:
# _ENVELOPE.decode / _DECODERS[cls].decode only catch msgspec.DecodeError).
def test_deeply_nested_json_is_a_protocol_error() -> None:
    depth = 2000
    text = '{"type":"ping","ts":1,"extra":' + "[" * depth + "]" * depth + "}"
    assert len(text.encode()) < MAX_MESSAGE_BYTES
    assert_code(text, ErrorCode.MALFORMED_MESSAGE, Channel.PRESENCE, "client")


# Regression guard; the bug was: decode_message(str) calls
# data.encode() without handling lone surrogates, so it raises UnicodeEncodeError instead of
# ProtocolError(MALFORMED_MESSAGE).
def test_text_with_lone_surrogate_is_a_protocol_error() -> None:
    assert_code('{"type":"ping","ts":1,"x":"\ud800"}', ErrorCode.MALFORMED_MESSAGE)


# --------------------------------------------------------------------------- hypothesis: decoders


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from([SID, "+15550100", "r1", "pn_15550150", "hangup", "busy", "PCMU", "1w#"])
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.builds(
    lambda body, type_: {**body, "type": type_},
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=12), json_values, max_size=8),
    st.sampled_from(TYPES) | json_values,
)

FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(st.text() | st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"])))
def test_fuzz_arbitrary_text_only_raises_protocol_error(text: str) -> None:
    check_decode_contract(text)


@FUZZ
@given(st.binary())
def test_fuzz_arbitrary_bytes_only_raises_protocol_error(data: bytes) -> None:
    check_decode_contract(data)


@FUZZ
@given(json_objects)
def test_fuzz_arbitrary_json_objects_only_raise_protocol_error(obj: dict[str, Any]) -> None:
    check_decode_contract(json.dumps(obj))
    check_decode_contract(json.dumps(obj).encode())


@FUZZ
@given(st.sampled_from(ALL_MESSAGES), st.data())
def test_fuzz_mutated_valid_messages_only_raise_protocol_error(
    cls: type[Message], data: st.DataObject
) -> None:
    wire = json.loads(encode_message(SAMPLES[cls]))
    keys = sorted(k for k in wire if k != "type")
    for key in data.draw(
        st.lists(st.sampled_from(keys), max_size=3, unique=True) if keys else st.just([])
    ):
        if data.draw(st.booleans()):
            del wire[key]
        else:
            wire[key] = data.draw(json_values)
    check_decode_contract(json.dumps(wire))


@FUZZ
@given(st.text() | st.binary() | json_objects.map(json.dumps))
def test_fuzz_request_id_of_never_raises(data: str | bytes) -> None:
    rid = request_id_of(data)
    assert rid is None or (isinstance(rid, str) and 0 < len(rid) <= 64)


# --------------------------------------------------------------------------- request_id_of


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"type":"dial","id":"r7","to":"nope"}', "r7"),
        (b'{"id":"r8"}', "r8"),
        ('{"type":"frobnicate","id":"abc"}', "abc"),
        ('{"id":"' + "x" * 64 + '"}', "x" * 64),
        ('{"id":"' + "x" * 65 + '"}', None),
        ('{"id":""}', None),
        ('{"id":5}', None),
        ('{"id":null}', None),
        ('{"id":["r1"]}', None),
        ('{"nested":{"id":"r1"}}', None),
        ('[{"id":"r1"}]', None),
        ('"r1"', None),
        ("not json", None),
        ("", None),
        (b"\xff\xfe", None),
    ],
)
def test_request_id_of(data: str | bytes, expected: str | None) -> None:
    assert request_id_of(data) == expected


# Regression guard; the bug was: request_id_of raises
# RecursionError on deeply nested JSON (it only catches msgspec.DecodeError); the core calls it
# while reporting an invalid message.
def test_request_id_of_deeply_nested_json_returns_none() -> None:
    assert request_id_of("[" * 2000) is None


# --------------------------------------------------------------------------- audio frames


def test_audio_frame_layout_and_round_trip() -> None:
    payload = bytes(range(PAYLOAD_BYTES))
    data = encode_audio_frame(7, 160 * 7, payload, marker=True)
    assert len(data) == FRAME_BYTES == HEADER_BYTES + PAYLOAD_BYTES == 168
    assert data[:HEADER_BYTES] == struct.pack("!BBHI", 0x01, 0x01, 7, 1120)
    assert data[HEADER_BYTES:] == payload
    assert decode_audio_frame(data) == AudioFrame(7, 1120, payload, marker=True)
    plain = encode_audio_frame(8, 1280, payload)
    assert plain[1] == 0
    assert decode_audio_frame(plain) == AudioFrame(8, 1280, payload, marker=False)


@pytest.mark.parametrize(
    ("sequence", "timestamp", "wire_seq", "wire_ts"),
    [
        (65535, 2**32 - 1, 65535, 2**32 - 1),
        (65536, 2**32, 0, 0),
        (65537, 2**32 + 160, 1, 160),
        (-1, -160, 65535, 2**32 - 160),
        (3 * 65536 + 5, 5 * 2**32 + 7, 5, 7),
    ],
)
def test_audio_frame_sequence_and_timestamp_wrap(
    sequence: int, timestamp: int, wire_seq: int, wire_ts: int
) -> None:
    frame = decode_audio_frame(encode_audio_frame(sequence, timestamp, b"\xff" * PAYLOAD_BYTES))
    assert (frame.sequence, frame.timestamp) == (wire_seq, wire_ts)


@FUZZ
@given(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.binary(min_size=PAYLOAD_BYTES, max_size=PAYLOAD_BYTES),
    st.booleans(),
)
def test_fuzz_audio_frame_round_trip(seq: int, ts: int, payload: bytes, marker: bool) -> None:
    frame = decode_audio_frame(encode_audio_frame(seq, ts, payload, marker=marker))
    assert frame == AudioFrame(seq % 2**16, ts % 2**32, payload, marker)


@pytest.mark.parametrize("size", [0, 1, PAYLOAD_BYTES - 1, PAYLOAD_BYTES + 1, 320])
def test_encode_audio_frame_refuses_bad_payload_length(size: int) -> None:
    with pytest.raises(ProtocolError) as info:
        encode_audio_frame(0, 0, b"\x00" * size)
    assert info.value.code is ErrorCode.MALFORMED_FRAME


def _frame(kind: int = 1, flags: int = 0, size: int = FRAME_BYTES) -> bytes:
    data = struct.pack("!BBHI", kind, flags, 1, 160) + b"\x7f" * PAYLOAD_BYTES
    return (data + b"\x00" * max(0, size - len(data)))[:size]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        _frame(size=HEADER_BYTES),
        _frame(size=FRAME_BYTES - 1),
        _frame(size=FRAME_BYTES + 1),
        _frame(size=FRAME_BYTES * 2),
        _frame(kind=0x00),
        _frame(kind=0x02),
        _frame(kind=0xFF),
        _frame(flags=0x02),
        _frame(flags=0x03),
        _frame(flags=0x80),
        _frame(flags=0xFF),
    ],
    ids=[
        "empty",
        "header-only",
        "one-short",
        "one-long",
        "double",
        "kind-0",
        "kind-2",
        "kind-ff",
        "flag-2",
        "flag-3",
        "flag-80",
        "flag-ff",
    ],
)
def test_decode_audio_frame_refuses_malformed_frames(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_audio_frame(data)
    assert info.value.code is ErrorCode.MALFORMED_FRAME


def test_decode_audio_frame_accepts_bytearray_and_memoryview() -> None:
    data = _frame(flags=0x01)
    expected = AudioFrame(1, 160, b"\x7f" * PAYLOAD_BYTES, marker=True)
    assert decode_audio_frame(bytearray(data)) == expected
    frame = decode_audio_frame(memoryview(data))  # type: ignore[arg-type]
    assert frame == expected
    assert type(frame.payload) is bytes


@FUZZ
@given(st.binary(max_size=400) | st.binary(min_size=FRAME_BYTES, max_size=FRAME_BYTES))
def test_fuzz_decode_audio_frame_only_raises_protocol_error(data: bytes) -> None:
    valid = len(data) == FRAME_BYTES and data[0] == 1 and data[1] in (0, 1)
    if not valid:
        with pytest.raises(ProtocolError) as info:
            decode_audio_frame(data)
        assert info.value.code is ErrorCode.MALFORMED_FRAME
        return
    frame = decode_audio_frame(data)
    again = encode_audio_frame(frame.sequence, frame.timestamp, frame.payload, marker=frame.marker)
    assert again == data


# --------------------------------------------------------------------------- numbers, versions


@pytest.mark.parametrize(
    "number",
    ["+15550100", "+12", "+447911123456", "+123456789012345", "+9" + "0" * 14, "+33123456789"],
)
def test_validate_e164_accepts(number: str) -> None:
    assert validate_e164(number) == number


@pytest.mark.parametrize(
    "number",
    [
        "",
        "+",
        "+1",
        "15550100",
        "0015550100",
        "+015550100",
        "+1234567890123456",
        "+1 555 0100",
        "+1-555-0100",
        "+1(555)0100",
        " +15550100",
        "+15550100 ",
        "++15550100",
        "+1555010a",
        "+１５５５０１００",
        "+١٢٣٤",
        "tel:+15550100",
        "+15550100\x00",
    ],
)
def test_validate_e164_refuses(number: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_e164(number)
    assert info.value.code is ErrorCode.INVALID_NUMBER
    assert "E.164" in info.value.message


# Regression guard; the bug was: E164_PATTERN ends with
# '$', which also matches before a trailing newline, so validate_e164('+15550100\n') returns the
# number instead of raising INVALID_NUMBER (softphone/protocol/messages.py; use \Z or
# re.fullmatch).
def test_validate_e164_refuses_trailing_newline() -> None:
    with pytest.raises(ProtocolError) as info:
        validate_e164("+15550100\n")
    assert info.value.code is ErrorCode.INVALID_NUMBER


def test_version_constants() -> None:
    assert PROTOCOL_VERSION == 1
    assert SUPPORTED_VERSIONS == (1,)
    assert API_PREFIX == "/v1"


def test_check_version() -> None:
    for version in SUPPORTED_VERSIONS:
        check_version(version)
    for version in (0, 2, -1, 10, 2**64):
        with pytest.raises(ProtocolError) as info:
            check_version(version)
        assert info.value.code is ErrorCode.UNSUPPORTED_VERSION
        assert "1" in info.value.message


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/presence", 1),
        ("/v1", 1),
        ("/v1/", 1),
        ("/v2/phone-numbers", 2),
        ("/v2", 2),
        ("/v10/x", 10),
        ("/v0/x", 0),
        ("/v1x/presence", None),
        ("/vx/presence", None),
        ("/v/presence", None),
        ("/x/v1/presence", None),
        ("v1/presence", None),
        ("/", None),
        ("", None),
        ("/sandbox/token", None),
    ],
)
def test_path_version(path: str, version: int | None) -> None:
    assert path_version(path) == version


# --------------------------------------------------------------------------- error codes


def test_error_codes_are_stable_strings_with_descriptions() -> None:
    for code in ErrorCode:
        assert code.value == code.name
        assert code.description
        assert 400 <= code.http_status < 600
    error = ProtocolError(ErrorCode.BUSY, "nope")
    assert str(error) == "BUSY: nope"
    assert isinstance(error, Exception)


@given(st.binary(min_size=0, max_size=200))
def test_audio_payload_agrees_with_decode_audio_frame(data: bytes) -> None:
    try:
        expected: bytes | None = decode_audio_frame(data).payload
    except ProtocolError:
        expected = None
    assert audio_payload(data) == expected


def test_audio_payload_of_valid_frames() -> None:
    frame = encode_audio_frame(7, 1120, bytes(range(160)), marker=True)
    assert audio_payload(frame) == bytes(range(160))
    assert audio_payload(b"\x02" + frame[1:]) is None  # unknown kind
    assert audio_payload(frame[:1] + b"\x02" + frame[2:]) is None  # reserved flag
