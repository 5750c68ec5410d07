"""Every key of the console, grouped by when it applies (after the config's overrides)."""

from __future__ import annotations

from typing import Final

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from softphone.tui import keymap

GROUPS: Final = (
    ("any", "Always"),
    ("idle", "No call"),
    ("call", "In a call"),
    ("incoming", "Incoming call"),
    ("confirm", "Questions"),
)


def help_table(overrides: dict[str, str]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for context, title in GROUPS:
        table.add_row(Text(title, style="bold underline"), "")
        for action in keymap.actions_for(context):  # type: ignore[arg-type]
            table.add_row(keymap.key_display(action, overrides), action.help)
        if context == "idle":
            table.add_row("0-9 * # +", "Type the number to dial")
        if context == "call":
            table.add_row("0-9 * #", "Send DTMF")
        table.add_row("", "")
    table.add_row("ctrl+p", "Command palette: every action by name")
    table.add_row("tab", "Next panel")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [  # noqa: RUF012
        Binding("escape,q,question_mark,f1", "close", "Close"),
        Binding("down,j", "scroll('down')", "Down", show=False),
        Binding("up,k", "scroll('up')", "Up", show=False),
    ]

    def compose(self) -> ComposeResult:
        overrides = dict(getattr(self.app, "_keymap", {}))
        with VerticalScroll(id="help-box"):
            yield Static(help_table(overrides), id="help-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "Keys"

    def action_scroll(self, direction: str) -> None:
        box = self.query_one(VerticalScroll)
        if direction == "down":
            box.scroll_down()
        else:
            box.scroll_up()

    def action_close(self) -> None:
        self.dismiss(None)
