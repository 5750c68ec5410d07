"""The runnable examples work as documented (each starts its own sandbox core)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_operator_console_example_calls_the_echo_line() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "operator_console.py"),
            "--sandbox",
            "--dial",
            "+15550100",
            "--dtmf",
            "12#",
            "--message",
            "hello far end",
            "--seconds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "number pn_15550150: +15550150" in out
    assert "presence: online" in out
    assert "identity example-operator" in out
    assert "call started: CA" in out
    # The echo line reports each digit and echoes the message: both went end to end.
    for digit in "12#":
        assert f"message received [application/dtmf]: {digit}" in out
    assert "message sent [text/plain]: hello far end" in out
    assert "message received [text/plain]: hello far end" in out
    assert re.search(r"sample +\d+\.\ds: MOS [1-4]\.\d\d, jitter", out)
    assert "call ended: hangup" in out
    assert "feedback sent" in out
    assert "presence: destroyed" in out
    assert "error" not in out
