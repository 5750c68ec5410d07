"""The headless softphone SDK (asyncio): Operator, Call, tokens, events, state machines.

Depends on ``softphone.protocol`` (wire format) and ``softphone.media`` (audio); never on
the TUI or the server.
"""

from __future__ import annotations

from softphone.engine.call import AudioFactory, Call, CallDirection, CallStats
from softphone.engine.errors import ClientErrorCode, OperatorError
from softphone.engine.operator import AvailabilityResult, Operator, PhoneNumber
from softphone.engine.states import CALL_TRANSITIONS, PRESENCE_TRANSITIONS, CallState, PresenceState
from softphone.engine.tokens import (
    GetToken,
    TokenInfo,
    redact,
    token_command_provider,
    token_url_provider,
)

__all__ = [
    "CALL_TRANSITIONS",
    "PRESENCE_TRANSITIONS",
    "AudioFactory",
    "AvailabilityResult",
    "Call",
    "CallDirection",
    "CallState",
    "CallStats",
    "ClientErrorCode",
    "GetToken",
    "Operator",
    "OperatorError",
    "PhoneNumber",
    "PresenceState",
    "TokenInfo",
    "redact",
    "token_command_provider",
    "token_url_provider",
]
