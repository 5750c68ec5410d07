"""The console's config file, flags and history database (no UI)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from softphone.cli import app_config, app_main, phone_main
from softphone.tui.config import ConfigError, TuiConfig, load_config, parse_config
from softphone.tui.history import CallHistory, HistoryEntry

EXAMPLE = """
[core]
url = ["https://core-a.example", "https://core-b.example"]
token_url = "https://backend.example/token"

[core.token_headers]
X-Team = "support"

[audio]
input = "USB Headset"
output = 3
sounds = false
rate = "native"

[phone]
caller_id = "+15550150"
numbers = ["+15550150"]
online_on_start = true

[keys]
dial = "enter"
hangup = "e,ctrl+e"

[history]
path = "~/calls.sqlite3"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.core_urls == ("https://core-a.example", "https://core-b.example")
    assert config.token_url == "https://backend.example/token"
    assert dict(config.token_headers) == {"X-Team": "support"}
    assert (config.input_device, config.output_device, config.sounds) == ("USB Headset", 3, False)
    assert config.audio_rate == "native"
    assert config.caller_id == "+15550150"
    assert config.numbers == ("+15550150",)
    assert config.online_on_start
    assert dict(config.keys) == {"dial": "enter", "hangup": "e,ctrl+e"}
    assert config.history_path == Path("~/calls.sqlite3").expanduser()
    config.check_connection()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[core\n", "not valid TOML"),
        ("[sound]\n", "unknown section [sound]"),
        ("[audio]\nvolume = 3\n", "unknown setting 'volume' in [audio]"),
        ("[audio]\nsounds = 'yes'\n", "[audio] sounds must be true or false"),
        ("[audio]\ninput = true\n", "[audio] input must be a string or a number"),
        ("[audio]\nrate = 'fast'\n", '[audio] rate must be "auto", "native" or a rate in Hz'),
        ("[audio]\nrate = 4000\n", "[audio] rate must be between 8000 and 384000 Hz"),
        ("[audio]\nrate = true\n", "[audio] rate must be a string or a number"),
        ("[phone]\ncaller_id = '555'\n", "[phone] caller_id"),
        ("[keys]\nteleport = 'x'\n", "unknown action 'teleport'"),
        ("[keys]\ndial = ''\n", "give keys like"),
        ("[core]\nurl = []\n", "[core] url must be a URL"),
        ("core = 1\n", "core must be a [core] table"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_default_file_is_fine_but_a_named_one_is_not(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope.toml") == TuiConfig()
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml", required=True)


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    config = app_config(
        ["--config", str(path), "--token-command", "helper --json", "--input", "2", "--sounds"]
    )
    assert config.token_command == ("helper", "--json")
    assert config.token_url is None  # the command replaces the file's token URL
    assert config.input_device == 2
    assert config.sounds is True
    assert config.core_urls == ("https://core-a.example", "https://core-b.example")
    assert config.audio_rate == "native"  # the file's
    assert app_config(["--config", str(path), "--audio-rate", "48000"]).audio_rate == 48000
    assert app_config(["--config", str(path), "--audio-rate", "AUTO"]).audio_rate == "auto"
    assert TuiConfig().audio_rate == "auto"
    sandbox = app_config(["--config", str(path), "--sandbox"])
    assert sandbox.sandbox
    assert parse_config({}) == TuiConfig()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--caller-id", "12"], "--caller-id"),
        (["--audio-rate", "loud"], "--audio-rate must be"),
        (["--number", "+1"], "--number"),
        (["--core-url", "http://127.0.0.1:1"], "no token source"),
        (["--frobnicate"], "unrecognized arguments"),
        (["--config", "/nonexistent/audin.toml"], "no such config file"),
    ],
)
def test_bad_flags_give_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    try:
        code = app_main(argv)
    except SystemExit as exc:  # argparse's own exit for unknown flags
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_call_subcommand_still_dispatches(capsys: pytest.CaptureFixture[str]) -> None:
    assert phone_main(["call", "12345"]) == 2
    assert "E.164" in capsys.readouterr().err


async def test_history_round_trip(tmp_path: Path) -> None:
    history = CallHistory(tmp_path / "deep" / "history.sqlite3")
    assert await history.recent() == []
    first = HistoryEntry(
        datetime(2030, 1, 1, 12, tzinfo=UTC),
        "outbound",
        "+15550100",
        "+15550150",
        5.0,
        "hangup",
        "CA1",
    )
    second = HistoryEntry(
        datetime(2030, 1, 1, 13, tzinfo=UTC),
        "inbound",
        "+15551234567",
        "+15550151",
        0.0,
        "rejected",
        "CA2",
    )
    await history.add(first)
    await history.add(second)
    assert await history.recent() == [second, first]
    assert await history.recent(limit=1) == [second]


def test_missing_ca_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty.toml").write_text("")
    result = subprocess.run(
        [
            sys.executable, "-m", "softphone.cli", "--core-url", "https://core.example",
            "--token-url", "https://backend.example/token",
            "--ca-file", str(tmp_path / "nope.pem"),
            "--config", str(tmp_path / "empty.toml"),
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "nope.pem" in lines[0]
    assert "no such file" in lines[0]


@pytest.mark.parametrize("command", ["console", "call"])
def test_sandbox_that_cannot_start_is_a_one_line_error(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from softphone.server import CoreServer

    async def refuse(self: CoreServer) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(CoreServer, "start", refuse)
    if command == "console":
        code = app_main(["--sandbox", "--config", "/dev/null"])
    else:
        code = phone_main(["call", "+15550100", "--sandbox", "--audio", "none"])
    assert code == 3
    err = capsys.readouterr().err
    assert "cannot start the sandbox core: [Errno 98] Address already in use" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
