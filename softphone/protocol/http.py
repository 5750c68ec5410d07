"""Bodies of the protocol v1 HTTP endpoints (shared by the core and the SDK)."""

from __future__ import annotations

from typing import Annotated, Final, TypeVar

import msgspec

from softphone.protocol.errors import ErrorCode, ProtocolError
from softphone.protocol.messages import Identifier, NumberText, Params

MAX_BODY_BYTES: Final = 16 * 1024

# Endpoint paths (docs/protocol.md, "HTTP endpoints").
TOKEN_PATH: Final = "/v1/operator-sessions/token"
PHONE_NUMBERS_PATH: Final = "/v1/phone-numbers"
PRESENCE_PATH: Final = "/v1/presence"
MEDIA_PATH_TEMPLATE: Final = "/v1/calls/{call_sid}/media"
HEALTH_PATH: Final = "/v1/health"
INBOUND_CALLS_PATH: Final = "/v1/admin/inbound-calls"
ADMIN_CALL_PATH_TEMPLATE: Final = "/v1/admin/calls/{call_sid}"
ADMIN_HANGUP_PATH_TEMPLATE: Final = "/v1/admin/calls/{call_sid}/hangup"
SANDBOX_TOKEN_PATH: Final = "/sandbox/token"
CALLER_GENERATOR_PATH: Final = "/v1/sandbox/caller-generator"
ADMIN_CALLER_GENERATOR_PATH: Final = "/v1/admin/caller-generator"
ADMIN_OPERATORS_PATH: Final = "/v1/admin/operators"
ADMIN_CALLS_PATH: Final = "/v1/admin/calls"
ADMIN_SIGNING_KEYS_PATH: Final = "/v1/admin/signing-keys"
MAX_CALL_LIST: Final = 1000
DEFAULT_CALL_LIST: Final = 50

T = TypeVar("T")


class TokenRequest(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``POST /v1/operator-sessions/token`` body (guarded by ``X-API-Key``)."""

    operator_ref: Identifier
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    phone_number_ids: Annotated[list[Identifier], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    ttl_seconds: Annotated[int, msgspec.Meta(ge=10, le=86400)] | None = None


class SandboxTokenRequest(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``POST /sandbox/token`` body (sandbox only; every field optional)."""

    operator_ref: Identifier = "sandbox-operator"
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "Sandbox Operator"
    ttl_seconds: Annotated[int, msgspec.Meta(ge=10, le=86400)] | None = None


class TokenResponse(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    token: str
    expires_at: str


class PhoneNumberInfo(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    id: str
    phone_number: str
    display_name: str


class PhoneNumberList(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    phone_numbers: list[PhoneNumberInfo]


class InboundCallRequest(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``POST /v1/admin/inbound-calls`` body: a simulated caller rings ``to``."""

    from_: NumberText = msgspec.field(name="from")
    to: NumberText
    params: Params = msgspec.field(default_factory=dict)
    ring_timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0


class InboundCallResponse(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    call_sid: str
    offered_to: int


class CallFeedback(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One ``post_feedback`` stored with a call."""

    operator_ref: str
    score: int
    issue: str | None


class CallRecord(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``GET /v1/admin/calls/{callSid}``: what the core stored about a call."""

    call_sid: str
    account_id: str
    direction: str
    from_: str = msgspec.field(name="from")
    to: str
    status: str
    end_reason: str | None
    end_message: str | None = None
    operator_ref: str | None
    created_at: str
    answered_at: str | None
    ended_at: str | None
    params: dict[str, str]
    dtmf: str = ""
    feedback: list[CallFeedback] = msgspec.field(default_factory=list)


class CallerGeneratorUpdate(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``PUT /v1/sandbox/caller-generator`` (or ``/v1/admin/caller-generator``) body: switch
    the sandbox's caller generator on or off; ``null`` interval = keep the current one."""

    enabled: bool
    mean_interval_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] | None = None


class CallerGeneratorState(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """The caller generator as it is now (answer of GET and PUT)."""

    enabled: bool
    mean_interval_seconds: float
    numbers: list[str]
    calls_placed: int


class Health(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``GET /v1/health``: liveness and live counts (no authentication)."""

    status: str
    protocol: int
    sandbox: bool
    tls: bool
    sessions: int
    calls: int
    operators_online: int
    calls_in_progress: int
    started_at: str
    uptime_seconds: float


class OnlineOperator(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One open presence session, as ``GET /v1/admin/operators`` lists it."""

    session_id: str
    account_id: str
    operator_ref: str
    display_name: str
    available_on: list[str]
    online_since: str
    token_expires_at: str
    call_sid: str | None = None


class OperatorList(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``GET /v1/admin/operators``: every open presence session, oldest first."""

    operators: list[OnlineOperator]


class CallSummary(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One call as ``GET /v1/admin/calls`` lists it (the record without DTMF and feedback)."""

    call_sid: str
    account_id: str
    direction: str
    from_: str = msgspec.field(name="from")
    to: str
    status: str
    end_reason: str | None
    end_message: str | None
    operator_ref: str | None
    created_at: str
    answered_at: str | None
    ended_at: str | None


class CallList(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``GET /v1/admin/calls``: stored calls, newest first."""

    calls: list[CallSummary]


class SigningKeyRotation(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``POST /v1/admin/signing-keys`` body: make a new signing key active; with
    ``revokePrevious`` every older key stops verifying at once."""

    revoke_previous: bool = False


class SigningKeyInfo(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A signing key of the core (never its secret)."""

    kid: str
    created_at: str
    active: bool
    revoked_at: str | None = None


class SigningKeyList(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """``GET /v1/admin/signing-keys``, oldest first."""

    signing_keys: list[SigningKeyInfo]


class SigningKeyRotated(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """Answer of ``POST /v1/admin/signing-keys``: the new key, the keys revoked, and how many
    open WebSockets were closed because their token was signed by a revoked key."""

    kid: str
    revoked: list[str]
    closed_sockets: int


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    code: str
    message: str
    supported_versions: list[int] | None = msgspec.field(default=None, name="supportedVersions")


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every non-2xx HTTP answer of the core, including refused WebSocket upgrades."""

    error: ErrorDetail


def decode_body(data: bytes, kind: type[T]) -> T:
    """Validate an HTTP JSON body, raising BAD_REQUEST (or MESSAGE_TOO_LARGE) on failure."""
    if len(data) > MAX_BODY_BYTES:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"body exceeds {MAX_BODY_BYTES} bytes")
    try:
        return msgspec.json.decode(data, type=kind)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid request body: {exc}") from None


def encode_body(body: msgspec.Struct) -> bytes:
    return msgspec.json.encode(body)


def error_body(
    code: ErrorCode, message: str, *, supported_versions: list[int] | None = None
) -> bytes:
    return msgspec.json.encode(
        ErrorBody(
            error=ErrorDetail(
                code=code.value, message=message, supported_versions=supported_versions
            )
        )
    )


def parse_error_body(data: bytes) -> ErrorDetail | None:
    """The error detail of a core's non-2xx answer, or None if the body is not one."""
    try:
        return msgspec.json.decode(data, type=ErrorBody).error
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
