"""docs/api.md stays true: every row of the seed mapping tables names a test that exists and
an SDK name that exists, and both seeds' surfaces are all there."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import typing
from functools import cache
from pathlib import Path

import pytest

from softphone.engine import call as call_module
from softphone.engine import operator as operator_module

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api.md"


def mapping_rows() -> list[tuple[str, str, str, str]]:
    text = DOC.read_text()
    section = text[text.index("## Mapping from the seeds") :]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("Seed", "---") or set(cells[0]) <= {"-"}:
            continue
        rows.append((cells[0], cells[1], cells[2], cells[3]))
    return rows


@cache
def functions_of(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    return frozenset(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


def has_member(cls: type, name: str) -> bool:
    if hasattr(cls, name):
        return True
    init = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    if name in init:
        return True
    return re.search(rf"self\.{re.escape(name)}\b\s*[:=]", inspect.getsource(cls)) is not None


EVENTS = set(typing.get_args(operator_module.EventName)) | set(
    typing.get_args(call_module.CallEvent)
)


def resolve(sdk: str) -> bool:
    """Whether the first name in backticks of an SDK cell exists."""
    match = re.search(r"`([^`]+)`", sdk)
    assert match, f"no SDK name in {sdk!r}"
    name = match.group(1)
    if name.startswith('"'):
        return name.strip('"') in EVENTS
    name = re.sub(r"\(.*$", "", name)  # Operator.go_online() / Operator(core_url=...)
    if "(" in match.group(1) and "." not in name:  # a constructor option
        option = re.search(r"\((\w+)=", match.group(1))
        assert option, sdk
        return has_member(getattr(importlib.import_module("softphone"), name), option.group(1))
    if name.startswith("softphone."):
        module, _, attr = name.rpartition(".")
        return hasattr(importlib.import_module(module), attr)
    owner, _, attr = name.partition(".")
    for module in ("softphone", "softphone.engine", "softphone.engine.audio"):
        cls = getattr(importlib.import_module(module), owner, None)
        if cls is not None:
            return has_member(cls, attr)
    return False


ROWS = mapping_rows()


def test_the_mapping_covers_both_seeds() -> None:
    names = " ".join(row[1] for row in ROWS)
    operator_seed = [
        "coreUrl", "getToken", "heartbeatIntervalMs", "reconnectBackoffMs", "audioConstraints",
        "logger", "listPhoneNumbers", "goOnline", "goOffline", "dial", "currentCall",
        "presenceStateChanged", "availabilityChanged", "incomingCall", "callStarted",
        "callEnded", "callSid", "endReason", "sendDtmf", "encodeMuLaw", "resampleLinear",
    ]  # fmt: skip
    device_seed = [
        "logLevel", "codecPreferences", "edge", "closeProtection",
        "enableImprovedSignalingErrorPrecision", "tokenRefreshMs", "register()",
        "unregister()", "connect()", "destroy()", "disconnectAll()", "updateToken()",
        "registering", "registered", "unregistered", "destroyed", "incoming",
        "tokenWillExpire", "identity", "isBusy", "token", "audio", "calls", "home",
        "isSupported", "status()", "pending", "ringing", "open", "reconnecting", "closed",
        "disconnect()", "ignore()", "isMuted()", "sendDigits", "sendMessage", "postFeedback",
        "messageReceived", "messageSent", "reconnected", "sample", "volume", "warning",
        "warning-cleared", "customParameters", "parameters", "codec",
    ]  # fmt: skip
    missing = [n for n in operator_seed + device_seed if f"`{n}" not in names]
    assert not missing


@pytest.mark.parametrize(("kind", "seed", "sdk", "test"), ROWS, ids=[r[1] for r in ROWS])
def test_row_names_a_real_sdk_name_and_an_existing_test(
    kind: str, seed: str, sdk: str, test: str
) -> None:
    assert resolve(sdk), f"{sdk} does not exist in the SDK"
    refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", test)
    assert refs, f"row {seed!r} names no test"
    for path, name in refs:
        assert name in functions_of(ROOT / path), f"{path}::{name} does not exist"
