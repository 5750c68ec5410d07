"""Every action of the console and its default keys, as data.

The screens build their Textual bindings from :data:`ACTIONS`; the config file's ``[keys]``
table maps an action id to other keys (``App.set_keymap``); the help screen and the command
palette list the same table. ``context`` says when an action applies: ``any``, ``idle`` (no
call), ``call`` (a call in progress), ``incoming`` (the incoming-call dialog) or ``confirm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from textual.binding import Binding, BindingType

Context = Literal["any", "idle", "call", "incoming", "confirm"]


@dataclass(frozen=True, slots=True)
class KeyAction:
    id: str
    """Stable id used in the config file's ``[keys]`` table."""
    keys: str
    """Default keys, comma-separated Textual key names."""
    action: str
    """The Textual action run on the screen (``dial``, ``digit('5')``...)."""
    description: str
    """Short label for the footer."""
    help: str
    """One line for the help screen and the command palette."""
    context: Context = "any"
    show: bool = True
    key_display: str | None = None


ACTIONS: Final[tuple[KeyAction, ...]] = (
    # idle: the dialpad
    KeyAction(
        "dial", "d,enter", "dial", "Call", "Call the typed number (empty: redial the last)", "idle"
    ),
    KeyAction(
        "redial",
        "r",
        "redial",
        "Redial",
        "Call the number of the selected history row",
        "idle",
        show=False,
    ),
    KeyAction(
        "delete_digit",
        "backspace",
        "delete_digit",
        "Del",
        "Delete the last typed digit",
        "idle",
        show=False,
    ),
    KeyAction(
        "clear_number",
        "escape",
        "clear_number",
        "Clear",
        "Clear the typed number",
        "idle",
        show=False,
    ),
    KeyAction(
        "plus", "plus", "digit('+')", "+", "Type + (start of an E.164 number)", "idle", show=False
    ),
    # in a call
    KeyAction(
        "hangup", "h", "hangup", "Hang up", "Hang up (or cancel a call still ringing)", "call"
    ),
    KeyAction("mute", "m", "mute", "Mute", "Mute or unmute the microphone", "call"),
    # presence and numbers
    KeyAction(
        "online", "o", "toggle_online", "Online", "Go online on the chosen numbers, or offline"
    ),
    KeyAction(
        "toggle_number",
        "space",
        "toggle_number",
        "Answer on",
        "Answer on the highlighted number, or stop",
        show=False,
    ),
    KeyAction(
        "caller_id",
        "c",
        "caller_id",
        "Caller ID",
        "Use the highlighted number as caller ID for outbound calls",
        show=False,
    ),
    # audio
    KeyAction("pick_input", "i", "pick_input", "Mic", "Choose the microphone"),
    KeyAction("pick_output", "s", "pick_output", "Speaker", "Choose the speaker", show=False),
    KeyAction(
        "test_speaker",
        "t",
        "test_speaker",
        "Test spk",
        "Play a test tone on the speaker",
        "idle",
        show=False,
    ),
    KeyAction(
        "test_microphone",
        "T",
        "test_microphone",
        "Test mic",
        "Record 3 s from the microphone and play it back",
        "idle",
        show=False,
    ),
    KeyAction(
        "rescan",
        "D",
        "rescan",
        "Devices",
        "Re-scan the audio devices (after plugging one in or out)",
        show=False,
    ),
    KeyAction(
        "sounds",
        "S",
        "toggle_sounds",
        "Sounds",
        "Ringtone, ringback and key tones on or off",
        show=False,
    ),
    # panels
    KeyAction(
        "focus_numbers",
        "n",
        "focus_panel('numbers')",
        "Numbers",
        "Go to the numbers panel",
        show=False,
    ),
    KeyAction(
        "focus_history",
        "y",
        "focus_panel('history')",
        "History",
        "Go to the call history",
        show=False,
    ),
    KeyAction("focus_log", "l", "focus_panel('log')", "Log", "Go to the event log", show=False),
    KeyAction("filter_log", "slash", "filter_log", "Filter", "Filter the event log", show=False),
    KeyAction("help", "question_mark,f1", "help", "Help", "Show every key"),
    KeyAction("quit", "q,ctrl+q", "quit", "Quit", "Quit (asks first during a call)"),
    # the incoming-call dialog
    KeyAction("accept", "a,enter", "accept", "Accept", "Answer the incoming call", "incoming"),
    KeyAction(
        "reject",
        "r",
        "reject",
        "Reject",
        "Reject the incoming call (the caller hears it end)",
        "incoming",
    ),
    KeyAction(
        "ignore",
        "i,escape",
        "ignore",
        "Ignore",
        "Stop ringing here; other operators may still answer",
        "incoming",
    ),
    # confirmations
    KeyAction("confirm_yes", "y", "confirm(True)", "Yes", "Confirm", "confirm"),
    KeyAction("confirm_no", "n,escape", "confirm(False)", "No", "Cancel", "confirm"),
)

ACTION_IDS: Final = frozenset(a.id for a in ACTIONS)
DIGITS: Final = "0123456789*#"
_KEY_NAMES: Final = {"*": "asterisk", "#": "number_sign"}


def actions_for(*contexts: Context) -> tuple[KeyAction, ...]:
    return tuple(a for a in ACTIONS if a.context in contexts)


def bindings(*contexts: Context) -> list[BindingType]:
    """Textual bindings for the actions of these contexts (ids let the keymap remap them)."""
    return [
        Binding(a.keys, a.action, a.description, show=a.show, id=a.id, key_display=a.key_display)
        for a in actions_for(*contexts)
    ]


def digit_bindings() -> list[BindingType]:
    """0-9, * and #: dial when idle, DTMF in a call (one footer entry stands for all)."""
    result: list[BindingType] = []
    for digit in DIGITS:
        key = _KEY_NAMES.get(digit, digit)
        result.append(
            Binding(key, f"digit('{digit}')", "Digits", show=digit == "0", key_display="0-9*#")
        )
    return result


def key_display(action: KeyAction, keymap: dict[str, str]) -> str:
    """The keys of an action as the user sees them (after overrides)."""
    keys = keymap.get(action.id, action.keys)
    names = {
        "question_mark": "?",
        "slash": "/",
        "plus": "+",
        "space": "space",
        "backspace": "⌫",
        "escape": "esc",
    }
    return " ".join(names.get(k, k) for k in keys.split(","))
