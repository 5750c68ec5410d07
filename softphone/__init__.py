"""audin-phone: terminal softphone, headless SDK, media engine and reference operator core.

Layers (imports flow one way)::

    softphone.tui     -> softphone.engine -> softphone.protocol, softphone.media
    softphone.server  -> softphone.protocol (and softphone.media for simulated far ends)

The public SDK names are re-exported here so integrators can write
``from softphone import Operator, Call``.
"""

from __future__ import annotations

from softphone.engine import (
    AvailabilityResult,
    Call,
    CallDirection,
    CallState,
    Operator,
    OperatorError,
    PhoneNumber,
    PresenceState,
    TokenInfo,
    token_url_provider,
)
from softphone.media import decode_mulaw, encode_mulaw
from softphone.protocol import PROTOCOL_VERSION, EndReason, ErrorCode

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "AvailabilityResult",
    "Call",
    "CallDirection",
    "CallState",
    "EndReason",
    "ErrorCode",
    "Operator",
    "OperatorError",
    "PhoneNumber",
    "PresenceState",
    "TokenInfo",
    "__version__",
    "decode_mulaw",
    "encode_mulaw",
    "token_url_provider",
]
