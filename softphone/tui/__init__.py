"""The operator console (``audin-phone``): a keyboard-first Textual app over the SDK.

Layers: ``app`` (the Textual App and its factory), ``phone`` (the controller: engine calls
and events, no Textual), ``screens/`` and ``widgets/`` (one per module), ``keymap`` (every
action and its keys, as data), ``config`` (TOML file and flags), ``history`` (SQLite), and
``app.tcss``. It talks only to ``softphone.engine``: no sockets, no server imports.
"""

from __future__ import annotations

from softphone.tui.app import PhoneApp, build_operator, create_app
from softphone.tui.config import ConfigError, TuiConfig, load_config

__all__ = ["ConfigError", "PhoneApp", "TuiConfig", "build_operator", "create_app", "load_config"]
