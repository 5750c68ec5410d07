"""Errors raised by the SDK and carried by its ``error`` events."""

from __future__ import annotations

from enum import StrEnum


class ClientErrorCode(StrEnum):
    """Codes for failures detected on the client side (wire codes are ``ErrorCode``)."""

    CONNECTION_FAILED = "CONNECTION_FAILED"
    CONNECTION_LOST = "CONNECTION_LOST"
    TOKEN_FETCH_FAILED = "TOKEN_FETCH_FAILED"
    REQUEST_FAILED = "REQUEST_FAILED"
    UNAUTHORIZED = "UNAUTHORIZED"
    TIMEOUT = "TIMEOUT"
    INVALID_STATE = "INVALID_STATE"
    INVALID_DTMF = "INVALID_DTMF"
    INVALID_FEEDBACK = "INVALID_FEEDBACK"
    MEDIA_FAILED = "MEDIA_FAILED"
    AUDIO_DEVICE_FAILED = "AUDIO_DEVICE_FAILED"
    PROTOCOL_VIOLATION = "PROTOCOL_VIOLATION"
    DESTROYED = "DESTROYED"
    CALL_IN_PROGRESS = "CALL_IN_PROGRESS"
    TLS_UNTRUSTED = "TLS_UNTRUSTED"


class OperatorError(Exception):
    """A failure with a stable ``code`` (an ``ErrorCode`` or ``ClientErrorCode`` value)."""

    def __init__(self, code: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.cause = cause

    def __repr__(self) -> str:
        return f"OperatorError(code={self.code!r}, message={self.message!r})"
