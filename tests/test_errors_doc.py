"""docs/errors.md lists every stable error code of the code base."""

from __future__ import annotations

from pathlib import Path

import pytest

from softphone.engine import ClientErrorCode
from softphone.media import AudioErrorCode
from softphone.protocol import ErrorCode

DOC = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text()


@pytest.mark.parametrize(
    "code", [*ErrorCode, *ClientErrorCode, *AudioErrorCode], ids=lambda c: str(c.value)
)
def test_every_code_is_in_the_catalogue(code: ErrorCode | ClientErrorCode | AudioErrorCode) -> None:
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{code.value}` |")), None)
    assert row is not None, f"{code.value} is missing from docs/errors.md"
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 5
    assert all(cells[i] for i in (2, 4)), f"{code.value}: description or solution is empty"


def test_protocol_descriptions_match_the_code() -> None:
    for code in ErrorCode:
        assert code.description in DOC, code
