"""SQLite storage of the core: accounts, API keys (hashed), numbers, signing keys, calls.

Every statement is short; the store is used from the event loop except for the slow key
derivation, which :mod:`softphone.server.auth` runs in a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    salt        BLOB NOT NULL,
    hash        BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE TABLE IF NOT EXISTS phone_numbers (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    phone_number  TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid         TEXT PRIMARY KEY,
    secret      BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    revoked_at  TEXT
);
CREATE TABLE IF NOT EXISTS calls (
    call_sid        TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    direction       TEXT NOT NULL,
    from_number     TEXT NOT NULL,
    to_number       TEXT NOT NULL,
    phone_number_id TEXT,
    status          TEXT NOT NULL,
    end_reason      TEXT,
    end_message     TEXT,
    operator_ref    TEXT,
    params          TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL,
    answered_at     TEXT,
    ended_at        TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_account ON calls(account_id, created_at);
CREATE INDEX IF NOT EXISTS calls_by_time ON calls(created_at);
CREATE TABLE IF NOT EXISTS feedback (
    call_sid      TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    operator_ref  TEXT NOT NULL,
    score         INTEGER NOT NULL,
    issue         TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_call ON feedback(call_sid);
CREATE TABLE IF NOT EXISTS dtmf (
    call_sid    TEXT NOT NULL,
    digits      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dtmf_by_call ON dtmf(call_sid);
"""


@dataclass(frozen=True, slots=True)
class PhoneNumberRow:
    id: str
    account_id: str
    phone_number: str
    display_name: str


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    key_id: str
    account_id: str
    salt: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    name: str
    created_at: str
    numbers: int
    active_keys: int


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key as the admin sees it: never its secret nor its hash."""

    key_id: str
    account_id: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class SigningKeyRow:
    kid: str
    created_at: str
    active: bool
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class CallRow:
    call_sid: str
    account_id: str
    direction: str
    from_number: str
    to_number: str
    phone_number_id: str | None
    status: str
    end_reason: str | None
    end_message: str | None
    operator_ref: str | None
    params: dict[str, str]
    created_at: str
    answered_at: str | None
    ended_at: str | None


class Store:
    """A thin, typed wrapper over one SQLite database file (WAL mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a database made by an older version up to this schema."""
        with self._lock:
            columns = {str(r[1]) for r in self._db.execute("PRAGMA table_info(signing_keys)")}
            if "revoked_at" not in columns:
                self._db.execute("ALTER TABLE signing_keys ADD COLUMN revoked_at TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        with self._lock:
            row: tuple[object, ...] | None = self._db.execute(sql, args).fetchone()
            return row

    def _all(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    # ------------------------------------------------------------------ accounts and keys

    def create_account(self, account_id: str, name: str, now: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO accounts VALUES (?, ?, ?)", (account_id, name, now))

    def account_exists(self, account_id: str) -> bool:
        return self._one("SELECT 1 FROM accounts WHERE id = ?", (account_id,)) is not None

    def account_name(self, account_id: str) -> str | None:
        row = self._one("SELECT name FROM accounts WHERE id = ?", (account_id,))
        return str(row[0]) if row else None

    def accounts(self) -> list[AccountRow]:
        rows = self._all(
            "SELECT a.id, a.name, a.created_at,"
            " (SELECT COUNT(*) FROM phone_numbers p WHERE p.account_id = a.id),"
            " (SELECT COUNT(*) FROM api_keys k WHERE k.account_id = a.id"
            "  AND k.revoked_at IS NULL)"
            " FROM accounts a ORDER BY a.created_at, a.id",
            (),
        )
        return [
            AccountRow(str(i), str(n), str(c), int(str(pn)), int(str(k))) for i, n, c, pn, k in rows
        ]

    def add_api_key(self, row: ApiKeyRow, now: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                (row.key_id, row.account_id, row.salt, row.hash, now),
            )

    def api_key(self, key_id: str) -> ApiKeyRow | None:
        row = self._one(
            "SELECT key_id, account_id, salt, hash FROM api_keys"
            " WHERE key_id = ? AND revoked_at IS NULL",
            (key_id,),
        )
        if row is None:
            return None
        key, account, salt, digest = row
        assert isinstance(salt, bytes)
        assert isinstance(digest, bytes)
        return ApiKeyRow(str(key), str(account), salt, digest)

    def api_key_revoked(self, key_id: str) -> bool:
        """Whether the key was revoked or deleted (one primary-key lookup: cheap enough to
        check on every use of a cached verification)."""
        row = self._one("SELECT revoked_at FROM api_keys WHERE key_id = ?", (key_id,))
        return row is None or row[0] is not None

    def api_keys(self, account_id: str) -> list[ApiKeyInfo]:
        rows = self._all(
            "SELECT key_id, account_id, created_at, revoked_at FROM api_keys"
            " WHERE account_id = ? ORDER BY created_at, rowid",
            (account_id,),
        )
        return [ApiKeyInfo(str(k), str(a), str(c), _opt(r)) for k, a, c, r in rows]

    def revoke_api_key(self, key_id: str, now: str) -> ApiKeyInfo | None:
        """Revoke one key; return it (None if unknown). Revoking twice keeps the first date."""
        with self._tx() as db:
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (now, key_id),
            )
            row = db.execute(
                "SELECT key_id, account_id, created_at, revoked_at FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        if row is None:
            return None
        return ApiKeyInfo(str(row[0]), str(row[1]), str(row[2]), _opt(row[3]))

    def rotate_api_key(self, row: ApiKeyRow, now: str, *, keep_old: bool) -> list[str]:
        """Add ``row`` as a new key of its account and, unless ``keep_old``, revoke every other
        key of that account, in one transaction. Return the ids of the keys revoked."""
        with self._tx() as db:
            revoked: list[str] = []
            if not keep_old:
                revoked = [
                    str(r[0])
                    for r in db.execute(
                        "SELECT key_id FROM api_keys WHERE account_id = ? AND revoked_at IS NULL",
                        (row.account_id,),
                    ).fetchall()
                ]
                db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE account_id = ?"
                    " AND revoked_at IS NULL",
                    (now, row.account_id),
                )
            db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                (row.key_id, row.account_id, row.salt, row.hash, now),
            )
        return revoked

    # ------------------------------------------------------------------ phone numbers

    def add_phone_number(self, row: PhoneNumberRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO phone_numbers VALUES (?, ?, ?, ?)",
                (row.id, row.account_id, row.phone_number, row.display_name),
            )

    def phone_numbers(self, account_id: str) -> list[PhoneNumberRow]:
        rows = self._all(
            "SELECT id, account_id, phone_number, display_name FROM phone_numbers"
            " WHERE account_id = ? ORDER BY phone_number",
            (account_id,),
        )
        return [PhoneNumberRow(*(str(v) for v in r)) for r in rows]

    def all_phone_numbers(self) -> list[PhoneNumberRow]:
        rows = self._all(
            "SELECT id, account_id, phone_number, display_name FROM phone_numbers"
            " ORDER BY account_id, phone_number",
            (),
        )
        return [PhoneNumberRow(*(str(v) for v in r)) for r in rows]

    def remove_phone_number(self, number: str) -> PhoneNumberRow | None:
        """Delete the number ``number`` (E.164) from its account; return it, or None."""
        with self._tx() as db:
            row = db.execute(
                "SELECT id, account_id, phone_number, display_name FROM phone_numbers"
                " WHERE phone_number = ?",
                (number,),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM phone_numbers WHERE phone_number = ?", (number,))
        return PhoneNumberRow(*(str(v) for v in row))

    def phone_number_by_e164(self, number: str) -> PhoneNumberRow | None:
        row = self._one(
            "SELECT id, account_id, phone_number, display_name FROM phone_numbers"
            " WHERE phone_number = ?",
            (number,),
        )
        return PhoneNumberRow(*(str(v) for v in row)) if row else None

    # ------------------------------------------------------------------ signing keys

    def signing_keys(self) -> list[tuple[str, bytes, bool]]:
        """(kid, secret, active) of every signing key not revoked, oldest first."""
        rows = self._all(
            "SELECT kid, secret, active FROM signing_keys WHERE revoked_at IS NULL"
            " ORDER BY created_at, rowid",
            (),
        )
        out: list[tuple[str, bytes, bool]] = []
        for kid, secret, active in rows:
            assert isinstance(secret, bytes)
            out.append((str(kid), secret, bool(active)))
        return out

    def add_signing_key(self, kid: str, secret: bytes, now: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE signing_keys SET active = 0")
            db.execute("INSERT INTO signing_keys VALUES (?, ?, ?, 1, NULL)", (kid, secret, now))

    def signing_key_rows(self) -> list[SigningKeyRow]:
        """Every signing key, revoked ones too (without the secrets), oldest first."""
        rows = self._all(
            "SELECT kid, created_at, active, revoked_at FROM signing_keys"
            " ORDER BY created_at, rowid",
            (),
        )
        return [SigningKeyRow(str(k), str(c), bool(a), _opt(r)) for k, c, a, r in rows]

    def revoke_signing_keys(self, keep: str, now: str) -> list[str]:
        """Revoke every signing key but ``keep``; return the kids revoked."""
        with self._tx() as db:
            kids = [
                str(r[0])
                for r in db.execute(
                    "SELECT kid FROM signing_keys WHERE kid != ? AND revoked_at IS NULL", (keep,)
                ).fetchall()
            ]
            db.execute(
                "UPDATE signing_keys SET revoked_at = ?, active = 0"
                " WHERE kid != ? AND revoked_at IS NULL",
                (now, keep),
            )
        return kids

    # ------------------------------------------------------------------ calls

    def insert_call(self, row: CallRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.call_sid,
                    row.account_id,
                    row.direction,
                    row.from_number,
                    row.to_number,
                    row.phone_number_id,
                    row.status,
                    row.end_reason,
                    row.end_message,
                    row.operator_ref,
                    json.dumps(row.params),
                    row.created_at,
                    row.answered_at,
                    row.ended_at,
                ),
            )

    def update_call(self, call_sid: str, **fields: str | None) -> None:
        allowed = {"status", "end_reason", "end_message", "operator_ref", "answered_at", "ended_at"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE calls SET {assignments} WHERE call_sid = ?",  # noqa: S608 (names checked)
                (*fields.values(), call_sid),
            )

    def call(self, call_sid: str) -> CallRow | None:
        row = self._one("SELECT * FROM calls WHERE call_sid = ?", (call_sid,))
        return None if row is None else _call_row(row)

    def calls(
        self, *, account_id: str | None = None, active: bool = False, limit: int = 50
    ) -> list[CallRow]:
        """Stored calls, newest first: of one account or all, only unfinished ones or all."""
        where: list[str] = []
        args: list[object] = []
        if account_id is not None:
            where.append("account_id = ?")
            args.append(account_id)
        if active:
            where.append("status != 'completed'")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(
            f"SELECT * FROM calls{clause} ORDER BY created_at DESC, rowid DESC LIMIT ?",  # noqa: S608
            (*args, limit),
        )
        return [_call_row(r) for r in rows]

    def add_feedback(
        self,
        *,
        call_sid: str,
        account_id: str,
        operator_ref: str,
        score: int,
        issue: str | None,
        now: str,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?)",
                (call_sid, account_id, operator_ref, score, issue, now),
            )

    def feedback(self, call_sid: str) -> list[tuple[str, int, str | None]]:
        """(operator_ref, score, issue) of every feedback on a call, oldest first."""
        rows = self._all(
            "SELECT operator_ref, score, issue FROM feedback WHERE call_sid = ? ORDER BY rowid",
            (call_sid,),
        )
        return [(str(ref), int(str(score)), _opt(issue)) for ref, score, issue in rows]

    def add_dtmf(self, call_sid: str, digits: str, now: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO dtmf VALUES (?, ?, ?)", (call_sid, digits, now))

    def dtmf(self, call_sid: str) -> str:
        """Every DTMF digit the operator sent in a call, in order."""
        rows = self._all("SELECT digits FROM dtmf WHERE call_sid = ? ORDER BY rowid", (call_sid,))
        return "".join(str(row[0]) for row in rows)

    def end_open_calls(self, reason: str, message: str, now: str) -> int:
        """Mark every call not yet completed as ended (crash recovery at start-up)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE calls SET status = 'completed', end_reason = ?, end_message = ?,"
                " ended_at = ? WHERE status != 'completed'",
                (reason, message, now),
            )
            return cur.rowcount


def _call_row(row: tuple[object, ...]) -> CallRow:
    values = list(row)
    params = json.loads(str(values[10]))
    return CallRow(
        call_sid=str(values[0]),
        account_id=str(values[1]),
        direction=str(values[2]),
        from_number=str(values[3]),
        to_number=str(values[4]),
        phone_number_id=_opt(values[5]),
        status=str(values[6]),
        end_reason=_opt(values[7]),
        end_message=_opt(values[8]),
        operator_ref=_opt(values[9]),
        params={str(k): str(v) for k, v in params.items()},
        created_at=str(values[11]),
        answered_at=_opt(values[12]),
        ended_at=_opt(values[13]),
    )


def _opt(value: object) -> str | None:
    return None if value is None else str(value)
