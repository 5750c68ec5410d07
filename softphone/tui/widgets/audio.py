"""Audio: microphone and speaker in use, live input/output meters, tests in progress.

The meters move five times a second during a call, so this panel renders line by line
(Textual's line API) from a small cache of strips: a level change repaints one line of the
screen, and a meter line already drawn at that length is not rebuilt. A whole-panel
repaint at 10 Hz measured about 3 % of a core on its own (docs/performance.md).
"""

from __future__ import annotations

from typing import NamedTuple

from rich.style import Style
from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from softphone.tui.phone import Phone
from softphone.tui.widgets.meter import cells, meter
from softphone.tui.widgets.panel import text_strip

LINES = 4
"""mic name, mic meter, speaker name, speaker meter."""
INDENT = "    "


class _LineKey(NamedTuple):
    label: str
    device: str
    test: str
    width: int
    filled: int = 0
    meter_width: int = 0  # 0: a device line


class AudioPanel(Widget):
    def __init__(self, phone: Phone, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phone = phone
        self.border_title = "Audio"
        self.levels: tuple[float, float] = (0.0, 0.0)
        self._cells = (0, 0)
        self._strips: dict[tuple[object, ...], Strip] = {}
        self._base: Style | None = None
        self._names: tuple[_LineKey | None, ...] = ()

    def meter_width(self) -> int:
        return max(4, self.content_size.width - 5) if self.content_size.width else 20

    def show_levels(self, levels: tuple[float, float]) -> None:
        """New meter levels; only a meter line whose length changed is repainted."""
        self.levels = levels
        width = self.meter_width()
        shown = (cells(levels[0], width), cells(levels[1], width))
        if shown == self._cells:
            return
        line_width = self.content_size.width
        for index, (old, new) in enumerate(zip(self._cells, shown, strict=True)):
            if old != new:
                self.refresh(Region(0, 2 * index + 1, line_width, 1))
        self._cells = shown

    def refresh_if_changed(self) -> bool:
        """Repaint the device lines if a device or a test changed (the meters repaint
        themselves, see :meth:`show_levels`); True if it will."""
        names = (self._key(0), self._key(2))
        if names == self._names:
            return False
        self._names = names
        self.refresh()
        return True

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()  # colours (theme, focus) changed
        self._base = None

    def lines(self) -> list[str]:
        """The panel's text, line by line (what the terminal shows inside the border)."""
        return [self._line(y).text for y in range(LINES)]

    def render_line(self, y: int) -> Strip:
        return self._line(y).crop_extend(0, self.content_size.width, self._style())

    def _style(self) -> Style:
        if self._base is None:
            self._base = self.visual_style.rich_style
        return self._base

    def _line(self, y: int) -> Strip:
        key = self._key(y)
        if key is None:
            return Strip.blank(self.content_size.width, self._style())
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) > 256:  # widths come and go with resizes
                self._strips.clear()
            strip = self._strips[key] = self._build(key)
        return strip

    def _key(self, y: int) -> _LineKey | None:
        """Everything line ``y`` shows: the key of its cached strip."""
        state = self.phone.state
        width = self.content_size.width
        if y in (0, 2):
            device, test = (
                (state.input_device, "microphone") if y == 0 else (state.output_device, "speaker")
            )
            running = f"{test} test running…" if state.audio_test == test else ""
            return _LineKey("mic " if y == 0 else "spk ", device, running, width)
        if y in (1, 3):
            meter_width = self.meter_width()
            filled = cells(self.levels[0 if y == 1 else 1], meter_width)
            return _LineKey(INDENT, "", "", width, filled, meter_width)
        return None

    def _build(self, key: _LineKey) -> Strip:
        if key.meter_width:  # a meter line
            bar = meter(key.filled / key.meter_width, key.meter_width)
            return self._strip(Text(INDENT, no_wrap=True) + bar)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(key.label, style="bold")
        text.append(key.device)
        if key.test:
            text.append(f"  {key.test}", style="yellow")
        return self._strip(text)

    def _strip(self, text: Text) -> Strip:
        return text_strip(text, self.content_size.width or 40, self.app.console, self._style())
