"""Protocol version constants and the negotiation rule.

The major version is carried twice: in every URL path (``/v1/...``) and in the
``hello`` message that opens every WebSocket. A peer that meets another version answers
with ``UNSUPPORTED_VERSION`` (HTTP 400 body with ``supportedVersions``, or an ``error``
message naming them plus close code 4002), so the other side can say something useful.
"""

from __future__ import annotations

import re

from softphone.protocol.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
API_PREFIX = f"/v{PROTOCOL_VERSION}"

_VERSION_PATH = re.compile(r"^/v(\d+)(/|\Z)")


def check_version(version: int) -> None:
    """Raise ``UNSUPPORTED_VERSION`` unless ``version`` is one this build speaks."""
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported; this end speaks {supported}",
        )


def path_version(path: str) -> int | None:
    """The major version named by a URL path such as ``/v2/presence``, or None."""
    match = _VERSION_PATH.match(path)
    return int(match.group(1)) if match else None
