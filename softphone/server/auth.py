"""API keys (hashed with scrypt) and session tokens (JWT, HS256, rotatable signing keys)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from softphone.protocol import ErrorCode, ProtocolError
from softphone.server.store import ApiKeyRow, Store

ISSUER = "audin-core"
API_KEY_PREFIX = "audin_"
# scrypt cost: about 30-60 ms per verification on one core, so an API key that leaks from a
# database dump costs an attacker that much per guess. Verified keys are cached briefly; a
# cached verification still checks (one primary-key lookup) that the key was not revoked
# since, so revocation takes effect on the next request.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_CACHE_SECONDS = 60.0


def utc_iso(ts: float) -> str:
    """RFC 3339 UTC timestamp with a Z suffix (second precision), as used on the wire."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kdf(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32, maxmem=64 << 20
    )


def new_api_key(account_id: str) -> tuple[str, ApiKeyRow]:
    """A fresh API key (shown once to the admin) and the row that stores only its hash."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    return f"{API_KEY_PREFIX}{key_id}.{secret}", ApiKeyRow(
        key_id, account_id, salt, _kdf(secret, salt)
    )


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    account_id: str
    key_id: str


class ApiKeyVerifier:
    """Checks ``X-API-Key`` values against the store. Blocking (scrypt): call it in a thread."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[bytes, tuple[VerifiedKey, float]] = {}

    def verify(self, api_key: str | None) -> str:
        """Return the account id the key belongs to, or raise INVALID_API_KEY."""
        return self.authenticate(api_key).account_id

    def authenticate(self, api_key: str | None) -> VerifiedKey:
        """The account and key id of a valid, unrevoked key; else raise INVALID_API_KEY."""
        if not api_key or not api_key.startswith(API_KEY_PREFIX) or "." not in api_key:
            raise ProtocolError(ErrorCode.INVALID_API_KEY, "missing or malformed X-API-Key header")
        key_id, _, secret = api_key[len(API_KEY_PREFIX) :].partition(".")
        fingerprint = hashlib.sha256(api_key.encode()).digest()
        cached = self._cache.get(fingerprint)
        now = self._clock()
        if cached is not None and now - cached[1] < _CACHE_SECONDS:
            if not self._store.api_key_revoked(key_id):
                return cached[0]
            self._cache.pop(fingerprint, None)
            raise ProtocolError(ErrorCode.INVALID_API_KEY, "the API key is not valid")
        row = self._store.api_key(key_id)
        if row is None or not hmac.compare_digest(_kdf(secret, row.salt), row.hash):
            raise ProtocolError(ErrorCode.INVALID_API_KEY, "the API key is not valid")
        if len(self._cache) > 1024:
            self._cache.clear()
        verified = VerifiedKey(row.account_id, row.key_id)
        self._cache[fingerprint] = (verified, now)
        return verified

    def forget(self) -> None:
        self._cache.clear()


@dataclass(frozen=True, slots=True)
class Claims:
    """What a session token asserts (docs/protocol.md, "Session tokens")."""

    account_id: str
    operator_ref: str
    display_name: str
    phone_number_ids: tuple[str, ...]
    issued_at: int
    expires_at: int
    token_id: str
    kid: str = ""
    """Id of the signing key that signed the token (its JWT header's ``kid``)."""


class TokenAuthority:
    """Issues and verifies session tokens signed with the core's active signing key."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._keys: dict[str, bytes] = {}
        self._revoked: set[str] = set()
        self._active = ""
        self._load()

    def _load(self) -> None:
        self._revoked = {r.kid for r in self._store.signing_key_rows() if r.revoked_at}
        keys = self._store.signing_keys()
        if not keys:
            self.rotate()
            return
        self._keys = {kid: secret for kid, secret, _ in keys}
        actives = [kid for kid, _, active in keys if active]
        self._active = actives[-1] if actives else keys[-1][0]

    @property
    def active_kid(self) -> str:
        return self._active

    def rotate(self) -> str:
        """Make a new signing key active. Tokens signed with older keys stay valid until expiry."""
        kid = f"k{secrets.token_hex(4)}"
        secret = secrets.token_bytes(32)
        self._store.add_signing_key(kid, secret, utc_iso(self._clock()))
        self._keys[kid] = secret
        self._active = kid
        return kid

    def revoke_previous(self) -> list[str]:
        """Revoke every signing key but the active one: tokens they signed stop verifying."""
        revoked = self._store.revoke_signing_keys(self._active, utc_iso(self._clock()))
        self._revoked.update(self._keys.keys() - {self._active})
        self._revoked.update(revoked)
        self._keys = {self._active: self._keys[self._active]}
        return revoked

    def verifies(self, kid: str) -> bool:
        """Whether tokens signed with ``kid`` are still accepted."""
        return kid in self._keys

    def issue(
        self,
        *,
        account_id: str,
        operator_ref: str,
        display_name: str,
        phone_number_ids: tuple[str, ...],
        ttl: int,
    ) -> tuple[str, int]:
        now = int(self._clock())
        exp = now + ttl
        payload = {
            "iss": ISSUER,
            "sub": operator_ref,
            "acc": account_id,
            "name": display_name,
            "pns": list(phone_number_ids),
            "iat": now,
            "exp": exp,
            "jti": secrets.token_hex(8),
            "ver": 1,
        }
        token = jwt.encode(
            payload, self._keys[self._active], algorithm="HS256", headers={"kid": self._active}
        )
        return token, exp

    def verify(self, token: str | None) -> Claims:
        """Check signature and expiry; raise AUTH_REQUIRED, TOKEN_INVALID or TOKEN_EXPIRED."""
        if not token:
            raise ProtocolError(
                ErrorCode.AUTH_REQUIRED, "an 'Authorization: Bearer <token>' header is required"
            )
        try:
            header = jwt.get_unverified_header(token)
            kid = str(header.get("kid", ""))
            key = self._keys.get(kid)
            if key is None:
                raise ProtocolError(
                    ErrorCode.TOKEN_INVALID,
                    "the token's signing key was revoked; fetch a fresh token"
                    if kid in self._revoked
                    else "the token was not signed by this core",
                )
            data = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "acc", "jti"], "verify_exp": False},
            )
        except jwt.InvalidTokenError:
            raise ProtocolError(
                ErrorCode.TOKEN_INVALID, "the token is malformed or its signature is wrong"
            ) from None
        if int(data["exp"]) <= self._clock():
            raise ProtocolError(
                ErrorCode.TOKEN_EXPIRED, f"the token expired at {utc_iso(int(data['exp']))}"
            )
        pns = data.get("pns", [])
        if not isinstance(pns, list) or not all(isinstance(p, str) for p in pns):
            raise ProtocolError(ErrorCode.TOKEN_INVALID, "the token's number list is malformed")
        return Claims(
            account_id=str(data["acc"]),
            operator_ref=str(data["sub"]),
            display_name=str(data.get("name", data["sub"])),
            phone_number_ids=tuple(pns),
            issued_at=int(data["iat"]),
            expires_at=int(data["exp"]),
            token_id=str(data["jti"]),
            kid=kid,
        )


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
