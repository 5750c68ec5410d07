"""WebSocket close codes of protocol v1 (RFC 6455 codes plus the 4000-4999 private range)."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    """Orderly close by either side (e.g. the client going offline)."""
    GOING_AWAY = 1001
    """The core is shutting down; clients reconnect with backoff."""
    MESSAGE_TOO_BIG = 1009
    """A WebSocket frame exceeded 64 KiB (RFC 6455); no ``error`` precedes it."""
    PROTOCOL_ERROR = 4000
    """The first message was not a valid ``hello``, or too many invalid messages in a row."""
    UNAUTHORIZED = 4001
    """The session token expired and was not replaced with ``update_token``."""
    UNSUPPORTED_VERSION = 4002
    """``hello`` named a protocol version the core does not speak."""
    HEARTBEAT_TIMEOUT = 4008
    """Nothing received for two heartbeat intervals."""
    MEDIA_LEG_REPLACED = 4009
    """A newer media connection for the same call took over this one."""
    CALL_ENDED = 4100
    """The media leg's call is over (a ``call_ended`` message precedes the close)."""
