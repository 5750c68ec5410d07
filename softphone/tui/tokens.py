"""``TokenWatch``: a ``get_token`` wrapper that remembers when the last token expires.

The SDK fetches tokens itself and never hands them out; the status panel only needs the
expiry, so the app wraps the token source before giving it to the Operator.
"""

from __future__ import annotations

from datetime import datetime

from softphone.engine import GetToken
from softphone.engine.tokens import TokenResult, to_token_info


class TokenWatch:
    """Calls ``get_token`` and records ``expires_at`` of what it returned."""

    def __init__(self, get_token: GetToken) -> None:
        self._get_token = get_token
        self.expires_at: datetime | None = None
        self.fetches = 0

    async def __call__(self) -> TokenResult:
        result = await self._get_token()
        info = to_token_info(result)
        self.expires_at = info.expires_at
        self.fetches += 1
        return info
