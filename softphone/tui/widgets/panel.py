"""Panels drawn from one ``rich`` Text, repainted only when that text changes.

Every repaint costs a compositor pass over the screen (2-15 ms in a call on a small
machine, measured by benchmarks/bench_tui.py), and a pass that runs long delays the
engine's audio on the same event loop. The console refreshes its panels on every state
change and once a second; :meth:`TextPanel.refresh_if_changed` turns the refreshes that
would draw the same text into nothing.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class TextPanel(Static):
    """A ``Static`` whose content is :meth:`build`; subclasses implement ``build``."""

    _shown: Text | None = None

    def build(self) -> Text:
        raise NotImplementedError

    def render(self) -> Text:
        text = self.build()
        self._shown = text
        return text

    def refresh_if_changed(self) -> bool:
        """Repaint if the panel would now show something else; True if it will."""
        if self.build() == self._shown:
            return False
        self.refresh()
        return True
