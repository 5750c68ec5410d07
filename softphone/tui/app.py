"""``PhoneApp``: the Textual application. It owns the services (operator, history, clock),
turns engine events into messages, and shows what the :class:`Phone` controller decides.

Build it with :func:`create_app`, which tests use to inject a config, an Operator, a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import ssl
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from textual.app import App, SystemCommand
from textual.css.query import NoMatches
from textual.screen import Screen

from softphone.engine import (
    Call,
    ClientErrorCode,
    Operator,
    OperatorError,
    token_command_provider,
    token_url_provider,
)
from softphone.engine.audio import AudioManager, AudioSettings
from softphone.tui import keymap
from softphone.tui.bridge import EngineBridge, EngineEvent
from softphone.tui.clock import Clock, SystemClock
from softphone.tui.config import TuiConfig, default_history_path
from softphone.tui.history import CallHistory
from softphone.tui.phone import Phone
from softphone.tui.screens.confirm import ConfirmScreen
from softphone.tui.screens.incoming import IncomingCallScreen
from softphone.tui.screens.main import MainScreen
from softphone.tui.terminal import (
    EXIT_HANGUP,
    EXIT_TERMINATED,
    SHUTDOWN_DEADLINE,
    detach_terminal,
    exit_deadline,
    release_input,
    terminal_hung_up,
)
from softphone.tui.widgets.audio import AudioPanel
from softphone.tui.widgets.event_log import EventLog

LEVEL_POLL: Final = 0.2
"""Seconds between reads of the audio level slot: the meters show the peak of each 200 ms
(baresip redraws its VU meters every 500 ms). Every meter move is a compositor pass on the
loop the call's audio shares; at 10 Hz the meters cost ~1.4 % of a core more in a call
(docs/performance.md). Also how often the terminal is checked for a hang-up."""
TICK_ROUNDS: Final = round(1.0 / LEVEL_POLL)
"""Level polls per tick of the clocks (the call timer, the token countdown): once a second."""
Severity = Literal["information", "warning", "error"]
ShutdownCause = Literal["hangup", "terminate"]
_CAUSES: Final[dict[str, ShutdownCause]] = {"SIGHUP": "hangup", "SIGTERM": "terminate"}
_SIGNALS: Final[tuple[tuple[signal.Signals, ShutdownCause], ...]] = tuple(
    (signal.Signals[name], cause)
    for name, cause in _CAUSES.items()
    if hasattr(signal, name)  # Windows has no SIGHUP
)


@dataclass(frozen=True, slots=True)
class Notice:
    severity: Severity
    title: str
    message: str


class PhoneApp(App[None]):
    """The operator console."""

    CSS_PATH = "app.tcss"
    TITLE = "audin-phone"

    def __init__(
        self,
        operator: Operator,
        config: TuiConfig,
        *,
        history: CallHistory,
        clock: Clock,
        live_quality: bool = True,
    ) -> None:
        super().__init__()
        self.operator = operator
        operator.close_protection = True  # quitting during a call asks first (action_quit)
        self.config = config
        self.clock = clock
        self.phone = Phone(operator, config, history, clock, self)
        self.phone.live_quality = live_quality
        self.bridge = EngineBridge(operator, self.post_message)
        self.main = MainScreen(self.phone)
        self.notices: deque[Notice] = deque(maxlen=50)
        """Recent notifications (the toasts), newest last."""
        self._incoming: IncomingCallScreen | None = None
        self._levels = (0.0, 0.0)
        self._rounds = 0  # of _on_timer
        self._on_terminal = False  # a real terminal (not run_test): watch it and the signals
        self._signals: list[signal.Signals] = []
        self._input_hold: int | None = None  # see detach_terminal
        self._silenced = contextlib.ExitStack()  # holds the batch that stops drawing
        self.shutdown_cause: ShutdownCause | None = None
        """Why the app is ending without being asked (see :meth:`shut_down`), if it is."""

    # ------------------------------------------------------------------ life cycle

    def on_mount(self) -> None:
        self.set_keymap(dict(self.config.keys))
        self.push_screen(self.main)
        self.bridge.attach()
        self.run_worker(self._start(), name="start", group="start")
        self.call_after_refresh(gc.freeze)
        self.set_interval(LEVEL_POLL, self._on_timer)
        if not self.is_headless:
            self._on_terminal = True
            self._watch_signals()

    def _watch_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, cause in _SIGNALS:
            # Not on Windows, nor outside the main thread (an embedding program's choice).
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.shut_down, cause)
                self._signals.append(sig)

    async def _start(self) -> None:
        await self.phone.start()
        # What exists now lives as long as the app: keep it out of the collector's full
        # passes, which otherwise hold the GIL for ~90 ms in a call (the audio callbacks
        # wait, the card underflows).
        gc.freeze()

    def on_unmount(self) -> None:
        self.bridge.detach()
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop = asyncio.get_running_loop()
            for sig in self._signals:
                loop.remove_signal_handler(sig)
        self._signals.clear()
        gc.unfreeze()  # an embedding program (or the next test) goes on collecting as usual

    def _on_timer(self) -> None:
        """The app's one timer: the meters every ``LEVEL_POLL`` seconds, and once a second
        the clocks (call timer, token countdown) too, so that their lines are drawn in the
        same screen update as the meters' instead of one of their own."""
        self._rounds += 1
        self._poll_levels()
        if self._rounds % TICK_ROUNDS == 0 and self.shutdown_cause is None:
            self._tick()

    def _poll_levels(self) -> None:
        if self._on_terminal and self.shutdown_cause is None and terminal_hung_up():
            # No SIGHUP when it was not our controlling terminal. Checked 5 times a second:
            # Textual's writer thread dies on the first failed write, and its queue holds
            # only about ten screen updates (2 s of meters) before the app would block on it.
            self.shut_down("hangup")
            return
        levels = self.operator.audio.levels(peak=True)
        if levels != self._levels and self.main.is_mounted:
            self._levels = levels
            with contextlib.suppress(NoMatches):  # the screen is being taken down
                self.main.query_one(AudioPanel).show_levels(levels)

    def _tick(self) -> None:
        if self.main.is_mounted:
            self.main.tick()

    def on_engine_event(self, event: EngineEvent) -> None:
        self.phone.handle(event.name, event.call, event.args)

    # ------------------------------------------------------------------ PhoneUI

    def state_changed(self) -> None:
        if self.main.is_mounted:
            self.main.refresh_panels()

    def problem(self, title: str, message: str) -> None:
        self._notice("error", title, message)

    def info(self, message: str) -> None:
        self._notice("information", "", message)

    def _notice(self, severity: Severity, title: str, message: str) -> None:
        self.notices.append(Notice(severity, title, message))
        self.notify(
            message, title=title, severity=severity, timeout=8 if severity == "error" else 4
        )

    def log_event(self, name: str, text: str, *, error: bool = False) -> None:
        if self.main.is_mounted:
            with contextlib.suppress(NoMatches):  # the screen is being taken down
                self.main.query_one(EventLog).add(self.clock.now(), name, text, error=error)

    def watch_call(self, call: Call) -> None:
        self.bridge.watch_call(call)

    def incoming(self, call: Call) -> None:
        self.bell()
        screen = IncomingCallScreen(self.phone, call)
        self._incoming = screen

        def answered(choice: str | None) -> None:
            if self._incoming is screen:
                self._incoming = None
            work = {
                "accept": self.phone.accept,
                "reject": self.phone.reject,
                "ignore": self.phone.ignore,
            }.get(choice or "")
            if work is not None and self.phone.state.offer is call:
                self.run_worker(work(), name=choice or "", group="engine")

        self.push_screen(screen, answered)

    def incoming_gone(self, call: Call, why: str) -> None:
        screen = self._incoming
        if screen is not None and screen.call is call:
            self._incoming = None
            if screen.is_current:
                screen.dismiss(None)
            if call.end_reason is not None and call.end_reason.value in (
                "taken_by_other",
                "cancelled",
            ):
                self.info(f"Call from {call.from_}: {why}")

    # ------------------------------------------------------------------ quitting

    async def action_quit(self) -> None:
        """Close the operator and exit; the operator refuses while a call is live
        (``close_protection``), and then the user is asked first."""
        try:
            await self.phone.quit()
        except OperatorError as exc:
            if exc.code != ClientErrorCode.CALL_IN_PROGRESS:
                raise
            view = self.phone.state.call
            remote = view.remote if view is not None else "the other party"

            def decided(yes: bool | None) -> None:
                if yes:
                    self.run_worker(self._hang_up_and_exit(), name="quit", group="quit")

            self.push_screen(
                ConfirmScreen(f"A call with {remote} is in progress.\nHang up and quit?"), decided
            )
            return
        self.exit()

    async def _hang_up_and_exit(self, return_code: int = 0) -> None:
        try:
            await self.phone.quit(hang_up=True)
        finally:
            if self._input_hold is not None:  # let Textual's input thread finish (EOF)
                release_input(self._input_hold)
                self._input_hold = None
            self.exit(return_code=return_code)

    def shut_down(self, cause: ShutdownCause) -> None:
        """End without asking: the terminal went away (``"hangup"``: SIGHUP, or the terminal
        reports a hang-up) or SIGTERM (``"terminate"``). Calls are hung up and recorded in
        the history, the operator goes offline, and the app exits with status 129 / 143.
        After a hang-up nothing is drawn any more (see :mod:`softphone.tui.terminal`)."""
        if self.shutdown_cause is not None:
            return
        self.shutdown_cause = cause
        status = EXIT_HANGUP if cause == "hangup" else EXIT_TERMINATED
        if cause == "hangup":
            # No more screen updates: there is no screen. (The batch is never closed.)
            self._silenced.enter_context(self.batch_update())
            if self._on_terminal:
                self._input_hold = detach_terminal()
        if self._on_terminal:
            exit_deadline(SHUTDOWN_DEADLINE, status)
        self.run_worker(self._hang_up_and_exit(status), name="shutdown", group="quit")

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        target = screen if isinstance(screen, MainScreen) else self.main
        overrides = dict(self._keymap)
        for action in keymap.actions_for("any", "idle", "call"):
            name = action.action.split("(")[0]
            params: tuple[object, ...] = ()
            if "(" in action.action:
                params = (action.action.split("'")[1],)
            if target.check_action(name, params) is not True:
                continue
            keys = keymap.key_display(action, overrides)
            yield SystemCommand(
                f"{action.description}: {action.help}",
                f"key: {keys}",
                lambda a=action.action: self.call_later(target.run_action, a),
            )
        for command in super().get_system_commands(screen):
            if command.title not in ("Quit", "Keys"):
                yield command


def build_operator(config: TuiConfig, audio: AudioManager | None = None) -> Operator:
    """An Operator for the configured core and token source (closing it refuses while a
    call is live: the app asks first)."""
    config.check_connection()
    if config.token_command:
        source = token_command_provider(list(config.token_command))
    else:
        assert config.token_url is not None
        verify: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=str(config.ca_file)) if config.ca_file else True
        )
        source = token_url_provider(
            config.token_url, headers=dict(config.token_headers), verify=verify
        )
    if audio is None:
        audio = AudioManager(
            backend="pyaudio",
            settings=AudioSettings(
                input=config.input_device,
                output=config.output_device,
                sounds=config.sounds,
                rate=config.audio_rate,
            ),
        )
    return Operator(
        list(config.core_urls),
        source,
        audio=audio,
        close_protection=True,
        ca_file=config.ca_file,
    )


def create_app(
    config: TuiConfig,
    *,
    operator: Operator | None = None,
    audio: AudioManager | None = None,
    clock: Clock | None = None,
    history: CallHistory | None = None,
    live_quality: bool = True,
) -> PhoneApp:
    """The app for ``config``; tests inject the Operator, a clock and a history file.

    ``live_quality=False`` keeps the call panel's quality figures as they are (screenshots)."""
    if operator is None:
        operator = build_operator(config, audio)
    else:
        settings = operator.audio.settings
        if config.input_device is not None:
            settings.input = config.input_device
        if config.output_device is not None:
            settings.output = config.output_device
        operator.audio.sounds_enabled = config.sounds
    return PhoneApp(
        operator,
        config,
        history=history or CallHistory(config.history_path or default_history_path()),
        clock=clock or SystemClock(),
        live_quality=live_quality,
    )


__all__ = ["Notice", "PhoneApp", "build_operator", "create_app"]
