"""A yes/no question (quitting during a call)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from softphone.tui import keymap


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = keymap.bindings("confirm")

    def __init__(self, question: str) -> None:
        super().__init__(id="confirm")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(self.question, id="confirm-text")
            yield Static("y: yes   n / esc: no", id="confirm-keys")
        yield Footer()

    def action_confirm(self, yes: bool) -> None:
        self.dismiss(yes)
