"""Keep docs/protocol.md true to softphone.protocol.

Conventions of docs/protocol.md that this test relies on (keep them when editing the doc):

* Every ```json fenced block is exactly one of
  - a **message example**: a JSON object with a string ``"type"`` and no marker comment. It
    must decode with :func:`softphone.protocol.decode_message` on every channel its class
    allows (``cls.channels``), as sent by ``cls.sender``;
  - an **HTTP body**: preceded by ``<!-- body: Name -->`` where ``Name`` is a
    ``msgspec.Struct`` of :mod:`softphone.protocol.http`; it must decode into that struct;
  - **informative JSON** (JWT claims, bodies without a struct): preceded by
    ``<!-- json: informative ... -->``; it must only be valid JSON.
  A marker comment applies to the next fenced block when only blank lines separate them.
* Message reference: one ``#### `type` `` heading per message, followed by a ``Channels: ...``
  sentence and a table whose first column lists the wire field names in backticks.
* Error codes: table rows ``| `CODE` | <http status> | <description> | ... |``; the
  description is ERROR_DESCRIPTIONS verbatim (HTML entities such as ``&lt;`` allowed).
* Close codes: table rows ``| <code> | `NAME` | ... |``.
* End reasons: table rows ``| `reason` | ... |`` in section "End reasons".
* Frame examples: ``<!-- frame: sequence=N timestamp=N marker=0|1 -->`` then a ```text block
  with the 8 header bytes in hex.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from softphone.protocol import (
    ALL_MESSAGES,
    ERROR_DESCRIPTIONS,
    FRAME_BYTES,
    HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    PAYLOAD_BYTES,
    CloseCode,
    EndReason,
    ErrorCode,
    Message,
    ProtocolError,
    decode_message,
    encode_audio_frame,
    message_type,
)
from softphone.protocol import http as api

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
LINES = DOC.splitlines()

MESSAGE_CLASSES: dict[str, type[Message]] = {message_type(cls): cls for cls in ALL_MESSAGES}
BODY_STRUCTS: dict[str, type[msgspec.Struct]] = {
    name: obj
    for name, obj in vars(api).items()
    if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj.__module__ == api.__name__
}

_MARKER = re.compile(r"^<!--\s*(\w+)\s*:\s*(.*?)\s*-->$")
_FENCE = re.compile(r"^```(\w*)\s*$")
_HEADING = re.compile(r"^#{1,6} ")
_MESSAGE_HEADING = re.compile(r"^####? `([a-z_]+)`\s*$")
_BACKTICKED = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    marker: tuple[str, str] | None  # (kind, value) of the preceding marker comment

    @property
    def label(self) -> str:
        return f"{DOC_PATH.name}:{self.line}"


def _blocks() -> list[Block]:
    blocks: list[Block] = []
    marker: tuple[str, str] | None = None
    i = 0
    while i < len(LINES):
        line = LINES[i]
        fence = _FENCE.match(line)
        if fence:
            start = i
            i += 1
            body: list[str] = []
            while i < len(LINES) and LINES[i].strip() != "```":
                body.append(LINES[i])
                i += 1
            assert i < len(LINES), f"unclosed fence at line {start + 1}"
            blocks.append(Block(fence.group(1), "\n".join(body), start + 1, marker))
            marker = None
        else:
            found = _MARKER.match(line.strip())
            if found:
                marker = (found.group(1), found.group(2))
            elif line.strip():
                marker = None
        i += 1
    return blocks


BLOCKS = _blocks()
JSON_BLOCKS = [b for b in BLOCKS if b.lang == "json"]
MESSAGE_EXAMPLES = [b for b in JSON_BLOCKS if b.marker is None]
BODY_EXAMPLES = [b for b in JSON_BLOCKS if b.marker is not None and b.marker[0] == "body"]
FRAME_EXAMPLES = [b for b in BLOCKS if b.marker is not None and b.marker[0] == "frame"]


def _section(title: str) -> list[str]:
    """The lines of the ``##`` section whose title contains ``title``."""
    start = next(
        (i for i, line in enumerate(LINES) if line.startswith("## ") and title in line), None
    )
    assert start is not None, f"no section {title!r} in {DOC_PATH.name}"
    end = next((i for i in range(start + 1, len(LINES)) if LINES[i].startswith("## ")), len(LINES))
    return LINES[start:end]


def _table_rows(lines: list[str]) -> list[list[str]]:
    """Cells of every table row in ``lines`` (header and separator rows dropped)."""
    rows = []
    for line in lines:
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(set(c) <= set("-: ") for c in cells):
            continue
        rows.append(cells)
    return rows


def _message_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    for i, line in enumerate(LINES):
        heading = _MESSAGE_HEADING.match(line)
        if not heading:
            continue
        end = next((j for j in range(i + 1, len(LINES)) if _HEADING.match(LINES[j])), len(LINES))
        name = heading.group(1)
        assert name not in sections, f"message {name!r} has two headings"
        sections[name] = LINES[i + 1 : end]
    return sections


MESSAGE_SECTIONS = _message_sections()


# --------------------------------------------------------------------------- JSON blocks


def test_doc_has_examples() -> None:
    assert MESSAGE_EXAMPLES
    assert BODY_EXAMPLES
    assert FRAME_EXAMPLES


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=lambda b: b.label)
def test_json_block_is_classified(block: Block) -> None:
    value = json.loads(block.text)
    if block.marker is None:
        assert isinstance(value, dict), f"{block.label}: unmarked JSON must be a message object"
        assert isinstance(value.get("type"), str), (
            f"{block.label}: unmarked JSON without 'type'; mark it <!-- body: Struct --> "
            "or <!-- json: informative -->"
        )
    else:
        kind, name = block.marker
        assert kind in {"body", "json"}, f"{block.label}: unknown marker {kind!r}"
        if kind == "json":
            assert name.startswith("informative"), f"{block.label}: unknown json marker {name!r}"


@pytest.mark.parametrize("block", MESSAGE_EXAMPLES, ids=lambda b: b.label)
def test_message_example_decodes(block: Block) -> None:
    type_ = json.loads(block.text)["type"]
    cls = MESSAGE_CLASSES.get(type_)
    assert cls is not None, f"{block.label}: type {type_!r} does not exist in softphone.protocol"
    assert cls.channels, f"{type_!r} has no channel"
    for channel in sorted(cls.channels):
        # ProtocolError is reported as text: it is a frozen slots dataclass, and letting it
        # propagate through pytest's context managers fails on Python 3.11.
        problem = None
        try:
            message = decode_message(block.text, channel=channel, sender=cls.sender)
        except ProtocolError as exc:
            problem = f"{block.label}: {type_!r} does not decode on {channel}: {exc}"
        if problem is not None:
            pytest.fail(problem)
        assert isinstance(message, cls)
    if type_ == "error":
        code = json.loads(block.text)["code"]
        assert code in ErrorCode.__members__.values(), f"{block.label}: unknown code {code!r}"


@pytest.mark.parametrize("block", BODY_EXAMPLES, ids=lambda b: b.label)
def test_body_example_decodes(block: Block) -> None:
    assert block.marker is not None
    name = block.marker[1]
    struct = BODY_STRUCTS.get(name)
    assert struct is not None, f"{block.label}: {name!r} is not a struct of softphone.protocol.http"
    body = msgspec.json.decode(block.text.encode(), type=struct)
    if isinstance(body, api.ErrorBody):
        assert body.error.code in ErrorCode.__members__.values()
        if body.error.code == ErrorCode.UNSUPPORTED_VERSION:
            assert body.error.supported_versions


def test_every_message_type_has_an_example() -> None:
    documented = {json.loads(b.text)["type"] for b in MESSAGE_EXAMPLES}
    missing = sorted(set(MESSAGE_CLASSES) - documented)
    assert not missing, f"message types without a JSON example in the doc: {missing}"


def test_every_documented_type_exists() -> None:
    documented = {json.loads(b.text)["type"] for b in MESSAGE_EXAMPLES} | set(MESSAGE_SECTIONS)
    unknown = sorted(documented - set(MESSAGE_CLASSES))
    assert not unknown, f"the doc names message types the code does not define: {unknown}"


def test_every_http_body_struct_has_an_example() -> None:
    documented = {b.marker[1] for b in BODY_EXAMPLES if b.marker is not None}
    # PhoneNumberInfo and ErrorDetail are only ever nested in another body.
    expected = set(BODY_STRUCTS) - {"PhoneNumberInfo", "ErrorDetail"}
    missing = sorted(expected - documented)
    assert not missing, f"HTTP bodies without an example: {missing}"


# --------------------------------------------------------------------------- message tables


@pytest.mark.parametrize("type_", sorted(MESSAGE_CLASSES))
def test_message_section_matches_struct(type_: str) -> None:
    cls = MESSAGE_CLASSES[type_]
    section = MESSAGE_SECTIONS.get(type_)
    assert section is not None, f"no '### `{type_}`' heading in the message reference"
    prose = " ".join(line for line in section if not line.startswith(("|", "{", "```")))
    said = re.search(r"Channels:\s*([a-z, ]+)", prose)
    assert said is not None, f"{type_}: no 'Channels: ...' sentence"
    documented_channels = {c.strip() for c in said.group(1).split(",") if c.strip()}
    assert documented_channels == {str(c) for c in cls.channels}, type_

    fields = {f.encode_name for f in msgspec.structs.fields(cls)}
    rows = _table_rows(section)
    assert rows, f"{type_}: no field table"
    names = set()
    for row in rows[1:]:  # rows[0] is the header row
        found = _BACKTICKED.search(row[0])
        assert found, f"{type_}: field cell without a backticked name: {row[0]!r}"
        names.add(found.group(1))
    assert names == fields, f"{type_}: doc fields {sorted(names)} != code fields {sorted(fields)}"


# --------------------------------------------------------------------------- codes


def test_error_code_table_matches_errors_py() -> None:
    rows = {
        m.group(1): row
        for row in _table_rows(_section("Error codes"))
        if (m := re.fullmatch(r"`([A-Z_]+)`", row[0]))
    }
    assert set(rows) == {c.value for c in ErrorCode}, "error table != ErrorCode"
    for code in ErrorCode:
        row = rows[code.value]
        assert row[1] == str(code.http_status), f"{code}: HTTP {row[1]} != {code.http_status}"
        assert html.unescape(row[2]) == ERROR_DESCRIPTIONS[code], f"{code}: description differs"


def test_close_code_table_matches_close_codes_py() -> None:
    rows = {int(row[0]): row for row in _table_rows(_section("Close codes")) if row[0].isdigit()}
    for code in CloseCode:
        assert code.value in rows, f"close code {code.value} ({code.name}) is not documented"
        assert rows[code.value][1] == f"`{code.name}`", f"close code {code.value}: name differs"
    for value, row in rows.items():
        if row[1].startswith("`"):
            assert value in CloseCode.__members__.values(), f"{value} {row[1]} is not a CloseCode"


def test_every_error_and_close_code_appears() -> None:
    for code in ErrorCode:
        assert f"`{code.value}`" in DOC, code
    for close in CloseCode:
        assert str(close.value) in DOC, close


def test_end_reason_table_matches_enum() -> None:
    rows = {
        m.group(1)
        for row in _table_rows(_section("End reasons"))
        if (m := re.fullmatch(r"`([a-z_]+)`", row[0]))
    }
    assert rows == {r.value for r in EndReason}


# --------------------------------------------------------------------------- HTTP, frames, limits


def _camel_path(path: str) -> str:
    return path.replace("{call_sid}", "{callSid}")


@pytest.mark.parametrize(
    "path",
    [
        api.TOKEN_PATH,
        api.PHONE_NUMBERS_PATH,
        api.PRESENCE_PATH,
        api.MEDIA_PATH_TEMPLATE,
        api.HEALTH_PATH,
        api.INBOUND_CALLS_PATH,
        api.ADMIN_CALL_PATH_TEMPLATE,
        api.ADMIN_HANGUP_PATH_TEMPLATE,
        api.SANDBOX_TOKEN_PATH,
    ],
)
def test_endpoint_is_in_the_endpoint_table(path: str) -> None:
    table = _table_rows(_section("HTTP endpoints"))
    assert any(row[1] == f"`{_camel_path(path)}`" for row in table), path


@pytest.mark.parametrize("block", FRAME_EXAMPLES, ids=lambda b: b.label)
def test_frame_header_example(block: Block) -> None:
    assert block.marker is not None
    args = dict(item.split("=") for item in block.marker[1].split())
    frame = encode_audio_frame(
        int(args["sequence"]),
        int(args["timestamp"]),
        bytes(PAYLOAD_BYTES),
        marker=args["marker"] == "1",
    )
    assert bytes.fromhex(block.text) == frame[:HEADER_BYTES]


def test_frame_layout_numbers() -> None:
    section = "\n".join(_section("Media channel"))
    assert f"exactly {FRAME_BYTES} bytes" in section
    rows = _table_rows(_section("Media channel"))
    offsets = {row[2]: (int(row[0]), int(row[1])) for row in rows if row[0].isdigit()}
    assert offsets["payload"] == (HEADER_BYTES, PAYLOAD_BYTES)
    assert sum(size for _, size in offsets.values()) == FRAME_BYTES


def test_limits_table() -> None:
    limits = "\n".join(_section("Limits"))
    assert f"{MAX_MESSAGE_BYTES // 1024} KiB ({MAX_MESSAGE_BYTES})" in limits
    assert f"{api.MAX_BODY_BYTES // 1024} KiB" in limits
    hello = msgspec.inspect.type_info(MESSAGE_CLASSES["hello"])
    assert isinstance(hello, msgspec.inspect.StructType)
    interval = next(f for f in hello.fields if f.encode_name == "heartbeatInterval")
    assert isinstance(interval.type, msgspec.inspect.FloatType)
    low, high = interval.type.ge, interval.type.le
    assert low is not None
    assert high is not None
    assert f"{low:g} to {high:g} s, default {interval.default:g} s" in limits
