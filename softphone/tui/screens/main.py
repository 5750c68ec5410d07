"""The main screen: every panel, the footer, and the actions behind the keys."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from textual.app import ComposeResult
from textual.containers import Container, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, OptionList

from softphone.tui import keymap
from softphone.tui.keymap import DIGITS
from softphone.tui.phone import Phone
from softphone.tui.widgets.audio import AudioPanel
from softphone.tui.widgets.call import CallPanel
from softphone.tui.widgets.dialpad import DialPad
from softphone.tui.widgets.event_log import EventLog
from softphone.tui.widgets.history import HistoryPanel
from softphone.tui.widgets.numbers import NumbersPanel
from softphone.tui.widgets.panel import TextPanel
from softphone.tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from softphone.engine.audio import DeviceSpec

MAX_DIAL: Final = 16  # "+" and 15 digits (E.164)
_CONTEXT_OF: Final = {a.action: a.context for a in keymap.ACTIONS if "(" not in a.action}
PANELS: Final = {"numbers": "#numbers", "history": "#history", "log": "#log-lines"}


class _Row(Horizontal):
    """A row that draws nothing of its own (see :class:`MainScreen`)."""

    BLANK = True


class _Column(Vertical):
    """A column that draws nothing of its own (see :class:`MainScreen`)."""

    BLANK = True


class _Slot(Container):
    """Holds one bar (status, footer) so that repaints elsewhere leave it out."""

    BLANK = True


class MainScreen(Screen[None]):
    """Status on top, dialpad / call / numbers / audio on the left, history and log right."""

    AUTO_FOCUS = None  # nothing focused: enter dials, digits go to the dialpad
    BINDINGS = [*keymap.bindings("idle", "call", "any"), *keymap.digit_bindings()]  # noqa: RUF012

    def __init__(self, phone: Phone) -> None:
        super().__init__(id="main")
        self.phone = phone
        self._bindings_for: str | None = None

    def compose(self) -> ComposeResult:
        # The meters repaint a line of the audio panel five times a second, and Textual
        # renders every widget whose *container* overlaps a repaint (the screen's children
        # always do). So the panels above the audio panel have a container of their own,
        # the status bar and the footer each sit in a slot, and the containers are BLANK
        # (their lines are blank strips, no styles to work out): a meter pass renders the
        # screen, the slots, the columns and the audio panel, not the bars and the panels
        # (docs/performance.md, seventh session).
        with _Slot(id="status-slot"):
            yield StatusBar(self.phone, id="status")
        with _Row(id="body"):
            with _Column(id="left"):
                with _Column(id="left-top"):
                    yield DialPad(self.phone, id="dialpad")
                    yield CallPanel(self.phone, id="call")
                    yield NumbersPanel(self.phone, id="numbers")
                yield AudioPanel(self.phone, id="audio")
            with _Column(id="right"):
                yield HistoryPanel(self.phone, id="history")
                yield EventLog(id="log")
        with _Slot(id="footer-slot"):
            yield Footer()

    def on_mount(self) -> None:
        self.refresh_panels()

    def refresh_panels(self) -> None:
        """Repaint the panels from the state: each only if what it shows changed (lists
        when their rows changed, the footer when the context changed): every repaint is a
        compositor pass on the loop the engine's audio shares."""
        try:
            panels: tuple[TextPanel | AudioPanel, ...] = (
                self.query_one(StatusBar),
                self.query_one(DialPad),
                self.query_one(CallPanel),
                self.query_one(AudioPanel),
            )
            for panel in panels:
                panel.refresh_if_changed()
            self.query_one(NumbersPanel).update_rows()
            self.query_one(HistoryPanel).update_rows()
        except NoMatches:
            return  # the screen is being taken down (quitting): an engine event came late
        if self.context != self._bindings_for:
            self._bindings_for = self.context
            self.refresh_bindings()

    def tick(self) -> None:
        """Once a second: what shows the time (the token countdown, the call timer)."""
        try:
            self.query_one(StatusBar).refresh_if_changed()
            if self.phone.state.call is not None:
                self.query_one(CallPanel).refresh_if_changed()
        except NoMatches:
            return  # the screen is being taken down

    # ------------------------------------------------------------------ context

    @property
    def context(self) -> str:
        return "call" if self.phone.state.call is not None else "idle"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        wanted = _CONTEXT_OF.get(action)
        if wanted in ("idle", "call"):
            return wanted == self.context
        if action == "digit" and parameters == ("+",):
            return self.context == "idle"
        return True

    def _run(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self.app.run_worker(work, name=name, group="engine")

    # ------------------------------------------------------------------ dialpad

    def action_digit(self, digit: str) -> None:
        state = self.phone.state
        if state.call is not None:
            if digit in DIGITS:
                self._run(self.phone.send_dtmf(digit), "dtmf")
            return
        if digit == "+" and state.dial:
            return  # "+" only starts a number
        if len(state.dial) < MAX_DIAL:
            state.dial += digit
            self.query_one(DialPad).refresh_if_changed()

    def action_delete_digit(self) -> None:
        self.phone.state.dial = self.phone.state.dial[:-1]
        self.query_one(DialPad).refresh_if_changed()

    def action_clear_number(self) -> None:
        self.phone.state.dial = ""
        self.query_one(DialPad).refresh_if_changed()

    def action_dial(self) -> None:
        self._run(self.phone.dial(), "dial")

    def action_redial(self) -> None:
        entry = self.query_one(HistoryPanel).selected_entry
        if entry is None:
            self.phone.ui.problem("Redial", "no call in the history yet")
            return
        self._run(self.phone.dial(entry.number), "redial")

    # ------------------------------------------------------------------ call

    def action_hangup(self) -> None:
        self._run(self.phone.hangup(), "hangup")

    def action_mute(self) -> None:
        self._run(self.phone.toggle_mute(), "mute")

    # ------------------------------------------------------------------ presence, numbers

    def action_toggle_online(self) -> None:
        self._run(self.phone.toggle_online(), "online")

    def _highlighted_number(self) -> str | None:
        panel = self.query_one(NumbersPanel)
        if panel.highlighted_id is None and self.phone.state.numbers:
            panel.highlighted = 0
        return panel.highlighted_id

    def action_toggle_number(self) -> None:
        number_id = self._highlighted_number()
        if number_id is not None:
            self._run(self.phone.toggle_number(number_id), "toggle-number")

    def action_caller_id(self) -> None:
        number_id = self._highlighted_number()
        if number_id is not None:
            self.phone.set_caller_id(number_id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if isinstance(event.option_list, NumbersPanel) and event.option.id is not None:
            self._run(self.phone.toggle_number(event.option.id), "toggle-number")
        elif isinstance(event.option_list, HistoryPanel) and self.phone.state.call is None:
            self.action_redial()

    # ------------------------------------------------------------------ audio

    def action_pick_input(self) -> None:
        self._run(self._pick("input"), "pick-input")

    def action_pick_output(self) -> None:
        self._run(self._pick("output"), "pick-output")

    async def _pick(self, kind: str) -> None:
        from softphone.tui.screens.picker import DevicePicker

        devices = await self.phone.devices(kind)
        if devices is None:
            return
        if not devices:
            what = "microphone" if kind == "input" else "speaker"
            self.phone.ui.problem(f"No {what}", f"no {what} found: connect one and try again")
            return
        current: DeviceSpec = (
            self.phone.operator.audio.settings.input
            if kind == "input"
            else self.phone.operator.audio.settings.output
        )
        choice = await self.app.push_screen_wait(DevicePicker(kind, devices, current))
        if choice is not None:
            await self.phone.select_device(kind, choice)

    def action_test_speaker(self) -> None:
        self._run(self.phone.test_speaker(), "test-speaker")

    def action_test_microphone(self) -> None:
        self._run(self.phone.test_microphone(), "test-microphone")

    def action_rescan(self) -> None:
        self._run(self.phone.rescan(), "rescan")

    def action_toggle_sounds(self) -> None:
        self.phone.toggle_sounds()

    # ------------------------------------------------------------------ panels and app

    def action_focus_panel(self, name: str) -> None:
        selector = PANELS.get(name)
        if selector is not None:
            self.query_one(selector).focus()

    def action_filter_log(self) -> None:
        self.query_one(EventLog).open_filter()

    def action_help(self) -> None:
        from softphone.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        await self.app.action_quit()
