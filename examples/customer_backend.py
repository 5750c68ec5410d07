"""The small server a customer runs to hand session tokens to its operators' softphones.

The seed's token flow, in Python: the account's API key lives here and only here. An
operator's softphone (``audin-phone --token-url http://backend/api/operator/token
--token-header "Authorization: Bearer <secret>"``, or the SDK's ``token_url_provider``)
asks this server for a token; it checks who is asking, then calls the core's
``POST /v1/operator-sessions/token`` with ``X-API-Key`` and returns ``{token, expiresAt}``.

    AUDIN_API_KEY=audin_... python examples/customer_backend.py \\
        --core-url http://127.0.0.1:8765 --users users.toml --port 8080

users.toml names the operators this backend serves (secrets are stored as SHA-256 hashes;
``python examples/customer_backend.py hash-secret`` prints one)::

    [users.alice]
    secret_sha256 = "..."
    operator_ref = "alice"
    display_name = "Alice Example"
    phone_number_ids = ["PN0123456789abcdef"]

Neither the API key nor a token is ever logged.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import hmac
import logging
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
from aiohttp import web

log = logging.getLogger("customer-backend")
TOKEN_PATH = "/v1/operator-sessions/token"


@dataclass(frozen=True)
class User:
    name: str
    secret_sha256: str
    operator_ref: str
    display_name: str
    phone_number_ids: tuple[str, ...]


def load_users(path: Path) -> list[User]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    users = []
    for name, entry in data.get("users", {}).items():
        users.append(
            User(
                name=name,
                secret_sha256=str(entry["secret_sha256"]).lower(),
                operator_ref=str(entry.get("operator_ref", name)),
                display_name=str(entry.get("display_name", name)),
                phone_number_ids=tuple(entry.get("phone_number_ids", [])),
            )
        )
    return users


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def find_user(users: list[User], authorization: str) -> User | None:
    """The user whose secret is the bearer credential (constant-time comparison)."""
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        return None
    digest = sha256(secret.strip())
    found = None
    for user in users:
        if hmac.compare_digest(user.secret_sha256, digest):
            found = user
    return found


def make_app(core_url: str, api_key: str, users: list[User]) -> web.Application:
    app = web.Application()
    client = httpx.AsyncClient(base_url=core_url.rstrip("/"), timeout=10.0)

    async def token(request: web.Request) -> web.Response:
        user = find_user(users, request.headers.get("Authorization", ""))
        if user is None:
            log.info("token refused: unknown credentials from %s", request.remote)
            return web.json_response({"error": "unknown user or secret"}, status=401)
        try:
            response = await client.post(
                TOKEN_PATH,
                headers={"X-API-Key": api_key},
                json={
                    "operatorRef": user.operator_ref,
                    "displayName": user.display_name,
                    "phoneNumberIds": list(user.phone_number_ids),
                },
            )
        except httpx.HTTPError as exc:
            log.warning("core unreachable: %s", type(exc).__name__)
            return web.json_response({"error": "the phone service is unreachable"}, status=502)
        if response.is_error:
            try:
                detail = response.json().get("error", {})
                code = str(detail.get("code", ""))
            except (ValueError, AttributeError):
                code = ""
            log.warning(
                "core refused a token for %s: HTTP %d %s", user.name, response.status_code, code
            )
            return web.json_response({"error": f"the phone service refused: {code}"}, status=502)
        data = response.json()
        log.info("token issued for %s (expires %s)", user.name, data.get("expiresAt"))
        return web.json_response({"token": data["token"], "expiresAt": data["expiresAt"]})

    async def close_client(_app: web.Application) -> None:
        await client.aclose()

    app.router.add_post("/api/operator/token", token)
    app.on_cleanup.append(close_client)
    return app


async def serve(args: argparse.Namespace) -> int:
    api_key = os.environ.get("AUDIN_API_KEY", "")
    if not api_key:
        print(
            "customer-backend: error: set AUDIN_API_KEY to the account's API key", file=sys.stderr
        )
        return 2
    try:
        users = load_users(args.users)
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        print(f"customer-backend: error: cannot read {args.users}: {exc}", file=sys.stderr)
        return 2
    runner = web.AppRunner(make_app(args.core_url, api_key, users), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"customer backend on http://{args.host}:{port} for {len(users)} users", flush=True)
    try:
        await asyncio.Event().wait()  # until interrupted
    finally:
        await runner.cleanup()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["hash-secret"]:
        print(sha256(getpass.getpass("secret: ")))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core-url", required=True, help="the audin core's base URL")
    parser.add_argument("--users", type=Path, required=True, help="users.toml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 = any free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
