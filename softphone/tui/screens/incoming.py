"""The incoming-call dialog: caller and called number; accept, reject or ignore with one key.

It closes by itself when the offer ends elsewhere (another operator answered, the caller hung
up); the app then says why in a notification and the log.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from softphone.engine import Call
from softphone.tui import keymap
from softphone.tui.phone import Phone


class IncomingCallScreen(ModalScreen[str]):
    BINDINGS = keymap.bindings("incoming")

    def __init__(self, phone: Phone, call: Call) -> None:
        super().__init__(id="incoming")
        self.phone = phone
        self.call = call

    def compose(self) -> ComposeResult:
        with Vertical(id="incoming-box"):
            text = Text(justify="center")
            text.append("Incoming call\n", style="bold")
            text.append(self.call.from_, style="bold reverse")
            text.append(f"\ncalling {self.call.to}", style="")
            number = self.phone.state.number_by_id(self.call.phone_number_id or "")
            if number is not None and number.display_name:
                text.append(f" ({number.display_name})", style="dim")
            yield Static(text, id="incoming-text")
            yield Static(self._hint(), id="incoming-keys")
        yield Footer()

    def _hint(self) -> Text:
        keys = dict(self.app._keymap) if hasattr(self.app, "_keymap") else {}
        text = Text(justify="center")
        for action in keymap.actions_for("incoming"):
            text.append(keymap.key_display(action, keys), style="bold")
            text.append(f" {action.description}   ")
        return text

    def _answer(self, choice: str) -> None:
        self.dismiss(choice)

    def action_accept(self) -> None:
        self._answer("accept")

    def action_reject(self) -> None:
        self._answer("reject")

    def action_ignore(self) -> None:
        self._answer("ignore")
