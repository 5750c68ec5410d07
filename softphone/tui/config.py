"""Settings of the operator console: a TOML file in the platform's config folder, then flags.

The file (``audin-phone/config.toml`` under :func:`platformdirs.user_config_path`) holds the
same settings as the command line, plus audio devices, sounds and key overrides; a flag given
on the command line wins over the file. Every problem is a :class:`ConfigError` whose message
names the file and the setting, so the command line can print one line and exit.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import platformdirs

from softphone.engine.audio import DEVICE_RATE_RANGE
from softphone.protocol import ProtocolError, validate_e164
from softphone.tui.keymap import ACTION_IDS

APP_NAME: Final = "audin-phone"
CONFIG_FILE: Final = "config.toml"
HISTORY_FILE: Final = "history.sqlite3"

DeviceSpec = int | str | None
AudioRate = int | Literal["auto", "native"]


class ConfigError(Exception):
    """A bad config file or flag; ``str()`` is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class TuiConfig:
    """Everything the app needs to start, merged from the config file and the flags."""

    sandbox: bool = False
    core_urls: tuple[str, ...] = ()
    token_url: str | None = None
    token_command: tuple[str, ...] = ()
    token_headers: Mapping[str, str] = field(default_factory=dict)
    ca_file: Path | None = None
    """PEM file of the CAs that signed the core's TLS certificate (instead of the system's)."""
    input_device: DeviceSpec = None
    output_device: DeviceSpec = None
    sounds: bool = True
    audio_rate: AudioRate = "auto"
    """Sound card rate: "auto" (8 kHz on a PulseAudio/PipeWire device), "native" or Hz."""
    caller_id: str | None = None
    numbers: tuple[str, ...] = ()
    """Numbers (E.164) to be online on; empty: all of the account's numbers."""
    online_on_start: bool = False
    keys: Mapping[str, str] = field(default_factory=dict)
    """Key overrides: action id (see ``softphone.tui.keymap``) -> keys, e.g. ``"d,enter"``."""
    history_path: Path | None = None
    """The call history database; None: ``history.sqlite3`` in the platform data folder."""

    def check_connection(self) -> None:
        """Raise ConfigError unless the app knows where to connect and how to get tokens."""
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ConfigError(f"ca_file {self.ca_file}: no such file")
        if self.sandbox:
            return
        if not self.core_urls:
            raise ConfigError(
                "no core to connect to: give --sandbox, or --core-url (or [core] url in "
                f"{default_config_path()})"
            )
        if not self.token_url and not self.token_command:
            raise ConfigError("no token source: give --token-url or --token-command")
        if self.token_url and self.token_command:
            raise ConfigError("give a token URL or a token command, not both")


def default_config_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / CONFIG_FILE


def default_history_path() -> Path:
    return platformdirs.user_data_path(APP_NAME) / HISTORY_FILE


_SECTIONS: Final[dict[str, frozenset[str]]] = {
    "core": frozenset({"url", "token_url", "token_command", "token_headers", "sandbox", "ca_file"}),
    "audio": frozenset({"input", "output", "sounds", "rate"}),
    "phone": frozenset({"caller_id", "numbers", "online_on_start"}),
    "keys": frozenset(),  # any action id, checked below
    "history": frozenset({"path"}),
}


def load_config(path: Path | None = None, *, required: bool = False) -> TuiConfig:
    """Read the config file (``path``, or the default one if it exists)."""
    file = path if path is not None else default_config_path()
    if not file.exists():
        if required:
            raise ConfigError(f"{file}: no such config file")
        return TuiConfig()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read it: {exc}") from None
    return parse_config(raw, str(file))


def parse_config(raw: Mapping[str, Any], where: str = "config") -> TuiConfig:
    """Turn a parsed TOML document into a TuiConfig (ConfigError naming the bad setting)."""
    for section, value in raw.items():
        if section not in _SECTIONS:
            known = ", ".join(f"[{s}]" for s in _SECTIONS)
            raise ConfigError(f"{where}: unknown section [{section}] (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {section} must be a [{section}] table")
        allowed = _SECTIONS[section]
        for key in value:
            if section != "keys" and key not in allowed:
                raise ConfigError(
                    f"{where}: unknown setting {key!r} in [{section}]"
                    f" (known: {', '.join(sorted(allowed))})"
                )
    reader = _Reader(raw, where)
    urls = reader.get("core", "url", (str, list))
    core_urls: tuple[str, ...] = ()
    if isinstance(urls, str):
        core_urls = (urls,)
    elif isinstance(urls, list):
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise ConfigError(f"{where}: [core] url must be a URL or a list of URLs")
        core_urls = tuple(urls)
    command = reader.get("core", "token_command", (str, list))
    headers = reader.get("core", "token_headers", (dict,)) or {}
    if not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{where}: [core] token_headers values must be strings")
    numbers = reader.get("phone", "numbers", (list,)) or []
    for number in numbers:
        _check_e164(number, f"{where}: [phone] numbers")
    caller_id = reader.get("phone", "caller_id", (str,))
    if caller_id is not None:
        _check_e164(caller_id, f"{where}: [phone] caller_id")
    keys = reader.get_table("keys")
    history = reader.get("history", "path", (str,))
    ca_file = reader.get("core", "ca_file", (str,))
    return TuiConfig(
        sandbox=bool(reader.get("core", "sandbox", (bool,)) or False),
        core_urls=core_urls,
        token_url=reader.get("core", "token_url", (str,)),
        token_command=_command(command, f"{where}: [core] token_command"),
        token_headers=dict(headers),
        ca_file=Path(ca_file).expanduser() if ca_file else None,
        input_device=reader.get("audio", "input", (str, int)),
        output_device=reader.get("audio", "output", (str, int)),
        sounds=_default(reader.get("audio", "sounds", (bool,)), True),
        audio_rate=_audio_rate(reader.get("audio", "rate", (str, int)), where),
        caller_id=caller_id,
        numbers=tuple(numbers),
        online_on_start=bool(reader.get("phone", "online_on_start", (bool,)) or False),
        keys=check_keys(keys, f"{where}: [keys]"),
        history_path=Path(history).expanduser() if history else None,
    )


def _audio_rate(value: str | int | None, where: str) -> AudioRate:
    return "auto" if value is None else parse_audio_rate(value, f"{where}: [audio] rate")


def parse_audio_rate(value: str | int, where: str) -> AudioRate:
    """``"auto"``, ``"native"`` or a rate in Hz (a number, or digits on the command line)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text == "native":
            return "native"
        if not text.isdigit():
            raise ConfigError(f'{where} must be "auto", "native" or a rate in Hz, got {value!r}')
        value = int(text)
    low, high = DEVICE_RATE_RANGE
    if not low <= value <= high:
        raise ConfigError(f"{where} must be between {low} and {high} Hz, got {value}")
    return value


def _default(value: bool | None, default: bool) -> bool:
    return default if value is None else value


def _command(value: str | list[Any] | None, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    else:
        parts = value
    if not parts or not all(isinstance(p, str) for p in parts):
        raise ConfigError(f"{where} must be a command line or a list of arguments")
    return tuple(parts)


def _check_e164(number: object, where: str) -> None:
    if not isinstance(number, str):
        raise ConfigError(f"{where}: {number!r} is not a phone number")
    try:
        validate_e164(number)
    except ProtocolError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def check_keys(keys: Mapping[str, Any], where: str) -> dict[str, str]:
    """Validate key overrides: known action ids, non-empty key lists without spaces."""
    checked: dict[str, str] = {}
    for action, value in keys.items():
        if action not in ACTION_IDS:
            raise ConfigError(
                f"{where}: unknown action {action!r} (see docs/tui.md for the action ids)"
            )
        if not isinstance(value, str) or not value.strip() or " " in value.strip():
            raise ConfigError(
                f'{where}: {action} = {value!r}: give keys like "d" or "ctrl+d,enter"'
            )
        parts = [p.strip() for p in value.split(",")]
        if not all(parts):
            raise ConfigError(f"{where}: {action} = {value!r} has an empty key")
        checked[action] = ",".join(parts)
    return checked


class _Reader:
    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        self._raw = raw
        self._where = where

    def get(self, section: str, key: str, types: tuple[type, ...]) -> Any:
        value = self._raw.get(section, {}).get(key)
        if value is None:
            return None
        # bool is an int: a device index must not be true/false
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ConfigError(f"{self._where}: [{section}] {key} must be {names}, got {value!r}")
        return value

    def get_table(self, section: str) -> dict[str, Any]:
        value = self._raw.get(section, {})
        return dict(value)


_TYPE_NAMES: Final[dict[type, str]] = {
    str: "a string",
    int: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


def device_spec(value: str | None) -> DeviceSpec:
    """A device given on the command line: an index or (part of) a name."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def merge_flags(config: TuiConfig, **flags: Any) -> TuiConfig:
    """Flags given on the command line (not None) win over the file."""
    given = {k: v for k, v in flags.items() if v is not None}
    if "keys" in given:
        given["keys"] = {**config.keys, **given["keys"]}
    if given.get("core_urls") or given.get("token_url") or given.get("token_command"):
        # a core or token source on the command line replaces the file's whole connection
        given.setdefault("sandbox", False)
        if given.get("token_url"):
            given.setdefault("token_command", ())
        if given.get("token_command"):
            given.setdefault("token_url", None)
    return replace(config, **given)
