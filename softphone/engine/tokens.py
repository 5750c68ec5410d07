"""Session tokens on the client side: normalising ``get_token`` results, token URLs, redaction."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from softphone.engine.errors import ClientErrorCode, OperatorError


def redact(token: str | None) -> str:
    """A token as it may appear in logs: its first 6 characters and its length."""
    if not token:
        return "<none>"
    return f"{token[:6]}…({len(token)} chars, redacted)"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A session token and, when known, when it expires. Its repr never shows the token."""

    token: str
    expires_at: datetime | None = None

    def __repr__(self) -> str:
        exp = self.expires_at.isoformat() if self.expires_at else None
        return f"TokenInfo(token={redact(self.token)!r}, expires_at={exp!r})"

    __str__ = __repr__

    def seconds_left(self, now: datetime | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return (self.expires_at - (now or datetime.now(UTC))).total_seconds()


TokenResult = TokenInfo | Mapping[str, Any] | str
GetToken = Callable[[], Awaitable[TokenResult]]


def parse_expiry(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expiresAt must be an ISO 8601 string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def to_token_info(result: TokenResult) -> TokenInfo:
    """Accept a TokenInfo, a ``{token, expiresAt?}`` mapping or a bare token string."""
    if isinstance(result, TokenInfo):
        return result
    if isinstance(result, str):
        if not result:
            raise ValueError("get_token returned an empty token")
        return TokenInfo(result)
    if isinstance(result, Mapping):
        token = result.get("token")
        if not isinstance(token, str) or not token:
            raise ValueError("get_token result has no 'token' string")
        return TokenInfo(token, parse_expiry(result.get("expiresAt", result.get("expires_at"))))
    raise ValueError(f"get_token returned {type(result).__name__}, expected a mapping or a string")


def token_command_provider(argv: Sequence[str], *, timeout: float = 15.0) -> GetToken:
    """A ``get_token`` that runs a local command printing ``{token, expiresAt}`` as JSON (for
    operators whose credentials live in a helper, e.g. over SSH). The command's stderr is
    discarded, never logged: it may hold secrets."""
    args = [str(a) for a in argv]
    if not args:
        raise ValueError("token command is empty")

    async def get_token() -> TokenResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED,
                f"cannot run the token command {args[0]!r}: {exc.strerror or exc}",
                exc,
            ) from exc
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED,
                f"the token command {args[0]!r} did not finish within {timeout:.0f} s",
            ) from None
        if proc.returncode != 0:
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED,
                f"the token command {args[0]!r} failed with exit status {proc.returncode}",
            )
        try:
            data = json.loads(out)
        except ValueError as exc:
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED,
                f"the token command {args[0]!r} did not print JSON",
                exc,
            ) from None
        if not isinstance(data, dict):
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED,
                f"the token command {args[0]!r} printed no JSON object",
            )
        return data

    return get_token


def token_url_provider(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
    verify: bool | str | ssl.SSLContext = True,
) -> GetToken:
    """A ``get_token`` that POSTs to ``url`` (your backend) and expects ``{token, expiresAt}``."""

    async def get_token() -> TokenResult:
        try:
            async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
                response = await client.post(
                    url, headers=dict(headers or {}), json=dict(body or {})
                )
        except httpx.HTTPError as exc:
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED, f"cannot reach the token URL {url}: {exc}", exc
            ) from exc
        if response.is_error:
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED,
                f"the token URL {url} answered HTTP {response.status_code}",
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED, f"the token URL {url} did not return JSON", exc
            ) from exc
        if not isinstance(data, dict):
            raise OperatorError(
                ClientErrorCode.TOKEN_FETCH_FAILED, f"the token URL {url} returned no JSON object"
            )
        return data

    return get_token
