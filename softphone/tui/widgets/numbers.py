"""Numbers: the account's numbers, which ones the operator answers on, the caller ID."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from softphone.engine import PresenceState
from softphone.tui.phone import Phone


class NumbersPanel(OptionList):
    def __init__(self, phone: Phone, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phone = phone
        self.border_title = "Numbers"
        self.border_subtitle = "space answer · c caller ID"
        self._shown: list[object] | None = None  # the rows last shown (their prompts)

    def rows(self) -> list[Option]:
        state = self.phone.state
        online = state.presence == PresenceState.ONLINE
        rows: list[Option] = []
        for number in state.numbers:
            text = Text(no_wrap=True, overflow="ellipsis")
            wanted = number.id in state.wanted
            text.append("[x] " if wanted else "[ ] ", style="bold" if wanted else "dim")
            text.append(number.phone_number, style="bold")
            if online and number.id in state.accepted:
                text.append(" online", style="green")
            elif online and number.id in state.refused:
                text.append(" refused", style="red")
            elif online and wanted:
                text.append(" not answering (o)", style="yellow")
            if number.phone_number == state.caller_id:
                text.append(" ★ID", style="cyan")
            if number.display_name:
                text.append(f" {number.display_name}", style="dim")
            rows.append(Option(text, id=number.id))
        if not rows:
            waiting = "loading…" if not state.numbers_loaded else "no numbers on this account"
            rows.append(Option(Text(waiting, style="dim"), disabled=True))
        return rows

    def update_rows(self) -> None:
        rows = self.rows()
        prompts: list[object] = [row.prompt for row in rows]
        if prompts == self._shown:
            return
        self._shown = prompts
        highlighted = self.highlighted
        self.set_options(rows)
        if highlighted is not None and highlighted < self.option_count:
            self.highlighted = highlighted
        elif self.option_count and self.phone.state.numbers:
            self.highlighted = 0

    @property
    def highlighted_id(self) -> str | None:
        option = self.highlighted_option
        return option.id if option is not None else None
