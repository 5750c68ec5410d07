"""Panels drawn from one ``rich`` Text, repainted line by line when that text changes.

Every repaint costs a compositor pass over the screen (2-15 ms in a call on a small
machine, measured by benchmarks/bench_tui.py), and a pass that runs long delays the
engine's audio on the same event loop. The console refreshes its panels on every state
change and once a second; :meth:`TextPanel.refresh_if_changed` turns the refreshes that
would draw the same text into nothing, and repaints only the lines that changed (the call
timer and the token countdown change one line a second). The panel renders through
Textual's line API from strips it keeps per line: a ``Static`` re-rendered its whole text
on every change, 0.7-1.1 ms a time on the development VM against about 0.25 ms now
(docs/performance.md, seventh session).
"""

from __future__ import annotations

from typing import Self

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget


def text_strip(text: Text, width: int, console: Console, base: Style) -> Strip:
    """One line of ``text`` as a strip of at most ``width`` cells (an ellipsis where it is
    cut), on the ``base`` style of the widget it is drawn in."""
    text = text.copy()
    text.truncate(width, overflow="ellipsis")
    segments = list(text.render(console))
    return Strip(Segment.apply_style(segments, base), text.cell_len).simplify()


class TextPanel(Widget):
    """A panel whose content is :meth:`build`; subclasses implement ``build``."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[Text] | None = None  # what the panel shows, line by line
        self._strips: dict[int, Strip] = {}  # line -> its strip at the current width
        self._strip_width = -1
        self._base: Style | None = None

    def build(self) -> Text:
        raise NotImplementedError

    def render(self) -> Text:
        """The text the panel would show now (the lines it draws come from it)."""
        return self.build()

    def refresh_if_changed(self) -> bool:
        """Repaint the lines that would now show something else; True if any will."""
        new = self._split(self.build())
        old = self._lines
        if old is None:  # not drawn yet, or wholly repainted: the render builds it
            self.refresh()
            return True
        changed = [
            y
            for y in range(max(len(old), len(new)))
            if y >= len(old) or y >= len(new) or old[y] != new[y]
        ]
        if not changed:
            return False
        self._lines = new
        width = self.content_size.width
        for y in changed:
            self._strips.pop(y, None)
            self.refresh(Region(0, y, width, 1))
        return True

    def refresh(
        self,
        *regions: Region,
        repaint: bool = True,
        layout: bool = False,
        recompose: bool = False,
    ) -> Self:
        """Textual's refresh; a whole repaint (no regions) builds the text afresh."""
        if repaint and not regions:
            self._lines = None
            self._strips.clear()
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()  # colours (theme, focus) changed
        self._base = None

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        if self._lines is None:
            self._lines = self._split(self.build())
        if width != self._strip_width:
            self._strips.clear()
            self._strip_width = width
        if self._base is None:
            self._base = self.visual_style.rich_style
        strip = self._strips.get(y)
        if strip is None:
            line = self._lines[y] if y < len(self._lines) else Text()
            strip = self._strips[y] = text_strip(line, width, self.app.console, self._base)
        return strip.crop_extend(0, width, self._base)

    @staticmethod
    def _split(text: Text) -> list[Text]:
        return list(text.split("\n", allow_blank=True))
