"""History: past calls from the local database; enter (or r) redials the highlighted one."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from softphone.tui.clock import format_duration
from softphone.tui.history import HistoryEntry
from softphone.tui.phone import Phone

_BAD_ENDS = {"failed", "busy", "no_answer", "cancelled", "taken_by_other", "ignored", "rejected"}


def history_row(entry: HistoryEntry) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(entry.started_at.strftime("%m-%d %H:%M"), style="dim")
    arrow = "→" if entry.direction == "outbound" else "←"
    text.append(f" {arrow} ")
    text.append(f"{entry.number:<13}", style="bold")
    text.append(f" {format_duration(entry.duration):>5} ")
    style = "yellow" if entry.end_reason in _BAD_ENDS else "green"
    text.append(entry.end_reason.replace("_", " "), style=style)
    return text


class HistoryPanel(OptionList):
    def __init__(self, phone: Phone, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phone = phone
        self.border_title = "History"
        self._shown: list[HistoryEntry] | None = None

    def update_rows(self) -> None:
        entries = self.phone.state.history
        if self._shown == entries:
            return
        self._shown = list(entries)
        highlighted = self.highlighted
        if entries:
            self.set_options(Option(history_row(e), id=str(i)) for i, e in enumerate(entries))
        else:
            self.set_options([Option(Text("no calls yet", style="dim"), disabled=True)])
        if entries:
            self.highlighted = min(highlighted or 0, len(entries) - 1)

    @property
    def selected_entry(self) -> HistoryEntry | None:
        option = self.highlighted_option
        if option is None or option.id is None:
            return None
        entries = self.phone.state.history
        index = int(option.id)
        return entries[index] if index < len(entries) else None
