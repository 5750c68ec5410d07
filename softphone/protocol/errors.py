"""Stable error codes of protocol v1 and the typed protocol error.

The codes are part of the wire contract (docs/protocol.md lists them): they travel in
``error`` messages, in HTTP error bodies and in ``OperatorError.code`` on the client.
A code is never renamed or reused; new codes may be added in minor releases.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every error code a v1 peer may send or raise."""

    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    INVALID_API_KEY = "INVALID_API_KEY"
    AUTH_REQUIRED = "AUTH_REQUIRED"
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_REQUEST = "BAD_REQUEST"
    MALFORMED_MESSAGE = "MALFORMED_MESSAGE"
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
    UNEXPECTED_MESSAGE = "UNEXPECTED_MESSAGE"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    MALFORMED_FRAME = "MALFORMED_FRAME"
    HEARTBEAT_TIMEOUT = "HEARTBEAT_TIMEOUT"
    INVALID_NUMBER = "INVALID_NUMBER"
    CALLER_ID_NOT_ALLOWED = "CALLER_ID_NOT_ALLOWED"
    CALL_NOT_FOUND = "CALL_NOT_FOUND"
    CALL_NOT_AVAILABLE = "CALL_NOT_AVAILABLE"
    BUSY = "BUSY"
    MEDIA_LEG_REPLACED = "MEDIA_LEG_REPLACED"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def description(self) -> str:
        return ERROR_DESCRIPTIONS[self]

    @property
    def http_status(self) -> int:
        return ERROR_HTTP_STATUS.get(self, 400)


ERROR_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.UNSUPPORTED_VERSION: "The peer speaks a protocol version this end does not support.",
    ErrorCode.INVALID_API_KEY: "The X-API-Key header is missing or does not match an account.",
    ErrorCode.AUTH_REQUIRED: "The request carries no 'Authorization: Bearer <token>' header.",
    ErrorCode.TOKEN_INVALID: "The session token is malformed or its signature does not verify.",
    ErrorCode.TOKEN_EXPIRED: "The session token has expired; fetch a new one.",
    ErrorCode.FORBIDDEN: "The token is valid but does not allow this number or call.",
    ErrorCode.NOT_FOUND: "No such endpoint or resource.",
    ErrorCode.BAD_REQUEST: "The HTTP request body is not valid for this endpoint.",
    ErrorCode.MALFORMED_MESSAGE: "A message is not valid JSON or its fields are invalid.",
    ErrorCode.UNKNOWN_MESSAGE_TYPE: "A message has a 'type' this protocol version does not define.",
    ErrorCode.UNEXPECTED_MESSAGE: "A valid message came on the wrong channel or at the wrong time.",
    ErrorCode.MESSAGE_TOO_LARGE: "A message exceeds the size limit of its channel.",
    ErrorCode.MALFORMED_FRAME: "A binary audio frame has a bad header or payload size.",
    ErrorCode.HEARTBEAT_TIMEOUT: "Nothing was received for two heartbeat intervals.",
    ErrorCode.INVALID_NUMBER: "A phone number is not in E.164 form (+ and 2 to 15 digits).",
    ErrorCode.CALLER_ID_NOT_ALLOWED: "The caller ID is not one of the numbers the token allows.",
    ErrorCode.CALL_NOT_FOUND: "No call with that callSid exists for this operator.",
    ErrorCode.CALL_NOT_AVAILABLE: "The call can no longer be accepted (taken, withdrawn or ended).",
    ErrorCode.BUSY: "The operator already has an active call.",
    ErrorCode.MEDIA_LEG_REPLACED: "A newer media connection for the same call took over.",
    ErrorCode.RATE_LIMITED: "Too many token requests; retry after the Retry-After seconds.",
    ErrorCode.TOO_MANY_CONNECTIONS: "Too many open WebSockets use the same session token.",
    ErrorCode.INTERNAL_ERROR: "The core failed unexpectedly; the request may be retried.",
}

ERROR_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNSUPPORTED_VERSION: 400,
    ErrorCode.INVALID_API_KEY: 401,
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.TOKEN_INVALID: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CALL_NOT_FOUND: 404,
    ErrorCode.BUSY: 409,
    ErrorCode.CALL_NOT_AVAILABLE: 409,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.INTERNAL_ERROR: 500,
}


class ProtocolError(Exception):
    """A typed protocol violation or refusal: what went wrong, as a stable code and a sentence."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r})"
