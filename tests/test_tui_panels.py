"""How the console's panels repaint: line by line, and only what a change touches.

The meters repaint five times a second and the call timer once a second, each a compositor
pass on the loop the engine's audio shares (docs/performance.md): these tests pin down
that such a pass renders only the lines and the widgets it has to.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer

from softphone.server import CoreServer
from softphone.tui.widgets.audio import AudioPanel
from softphone.tui.widgets.call import CallPanel
from softphone.tui.widgets.dialpad import DialPad
from softphone.tui.widgets.event_log import EventLog
from softphone.tui.widgets.history import HistoryPanel
from softphone.tui.widgets.numbers import NumbersPanel
from softphone.tui.widgets.panel import TextPanel
from softphone.tui.widgets.status import StatusBar
from tests.test_tui import console, until


class Rows(TextPanel):
    """A panel showing ``rows``; counts the content lines it renders."""

    DEFAULT_CSS = "Rows { height: 4; width: 24; }"

    def __init__(self, rows: list[str]) -> None:
        super().__init__(id="rows")
        self.rows = rows
        self.rendered: list[int] = []

    def build(self) -> Text:
        return Text("\n".join(self.rows), no_wrap=True, overflow="ellipsis")

    def render_line(self, y: int) -> Strip:
        self.rendered.append(y)
        return super().render_line(y)


class RowsApp(App[None]):
    def __init__(self, rows: list[str]) -> None:
        super().__init__()
        self.panel = Rows(rows)

    def compose(self) -> ComposeResult:
        yield self.panel


def shown(panel: Widget) -> list[str]:
    """The panel's lines as the screen has them."""
    region = panel.region
    strips = panel.screen._compositor.render_strips()
    return [
        strips[y].crop(region.x, region.right).text.rstrip() for y in range(region.y, region.bottom)
    ]


async def test_a_text_panel_repaints_only_the_lines_that_changed() -> None:
    app = RowsApp(["state ACTIVE", "timer 00:01", "quality -"])
    async with app.run_test() as pilot:
        panel = app.panel
        await pilot.pause()
        assert shown(panel) == ["state ACTIVE", "timer 00:01", "quality -", ""]

        panel.rendered.clear()
        assert panel.refresh_if_changed() is False  # same text: nothing to do
        await pilot.pause()
        assert panel.rendered == []

        panel.rows[1] = "timer 00:02"
        assert panel.refresh_if_changed() is True
        await pilot.pause()
        assert panel.rendered == [1]
        assert shown(panel) == ["state ACTIVE", "timer 00:02", "quality -", ""]

        panel.rendered.clear()
        panel.rows[:] = ["state ENDED"]  # fewer lines: the others go blank
        assert panel.refresh_if_changed() is True
        await pilot.pause()
        assert sorted(panel.rendered) == [0, 1, 2]
        assert shown(panel) == ["state ENDED", "", "", ""]


async def test_a_whole_repaint_builds_the_text_afresh_and_long_lines_get_an_ellipsis() -> None:
    app = RowsApp(["one"])
    async with app.run_test() as pilot:
        panel = app.panel
        await pilot.pause()
        panel.rows[:] = ["two", "a line much longer than the panel is wide"]
        panel.refresh()  # not refresh_if_changed: a plain repaint must not show "one"
        await pilot.pause()
        assert shown(panel) == ["two", "a line much longer than…", "", ""]
        assert "two" in str(panel.render())


@contextmanager
def counting_renders() -> Iterator[collections.Counter[str]]:
    """Counts ``render_lines`` per widget class while the block runs."""
    counts: collections.Counter[str] = collections.Counter()
    original = Widget.render_lines

    def render_lines(self: Widget, crop: Region) -> list[Strip]:
        counts[type(self).__name__] += 1
        return original(self, crop)

    Widget.render_lines = render_lines  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        Widget.render_lines = original  # type: ignore[method-assign]


async def test_a_meter_pass_renders_the_audio_panel_and_no_other_panel(
    core: CoreServer, tmp_path: Path
) -> None:
    async with console(core, tmp_path) as (app, pilot):
        audio = app.main.query_one(AudioPanel)
        await pilot.pause()
        with counting_renders() as counts:
            audio.show_levels((0.5, 0.25))
            await until(pilot, lambda: counts["AudioPanel"] > 0)
        assert audio.lines()[1].count("▮") == audio.meter_width() // 2
        others = (StatusBar, Footer, DialPad, CallPanel, NumbersPanel, HistoryPanel, EventLog)
        assert {cls.__name__: counts[cls.__name__] for cls in others} == dict.fromkeys(
            (cls.__name__ for cls in others), 0
        )
