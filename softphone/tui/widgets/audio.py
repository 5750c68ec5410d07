"""Audio: microphone and speaker in use, live input/output meters, tests in progress."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from softphone.tui.phone import Phone
from softphone.tui.widgets.meter import cells, meter


class AudioPanel(Static):
    levels: reactive[tuple[float, float]] = reactive((0.0, 0.0))

    def __init__(self, phone: Phone, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phone = phone
        self.border_title = "Audio"
        self._cells = (0, 0)

    def meter_width(self) -> int:
        return max(4, self.content_size.width - 5) if self.content_size.width else 20

    def show_levels(self, levels: tuple[float, float]) -> None:
        """New meter levels; repainted only when a meter gains or loses a cell."""
        width = self.meter_width()
        shown = (cells(levels[0], width), cells(levels[1], width))
        if shown != self._cells:
            self._cells = shown
            self.levels = levels

    def render(self) -> Text:
        state = self.phone.state
        mic, speaker = self.levels
        width = self.meter_width()
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("mic ", style="bold")
        text.append(state.input_device)
        text.append("\n    ")
        text.append_text(meter(mic, width))
        text.append("\nspk ", style="bold")
        text.append(state.output_device)
        text.append("\n    ")
        text.append_text(meter(speaker, width))
        if state.audio_test:
            text.append(f"\n{state.audio_test} test running…", style="yellow")
        return text
