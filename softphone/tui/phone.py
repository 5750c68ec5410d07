"""The console's controller: engine calls and engine events in, :class:`PhoneState` out.

No Textual here: the app gives a :class:`PhoneUI` (notifications, the log, the incoming-call
dialog) and runs these coroutines as workers on its own asyncio loop, which is also the
engine's. Engine failures are reported, never raised into the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from softphone.engine import (
    AvailabilityResult,
    Call,
    ClientErrorCode,
    Operator,
    OperatorError,
    PresenceState,
    redact,
)
from softphone.engine.audio import MicrophoneTest
from softphone.media.devices import DeviceInfo, DevicesChange
from softphone.protocol import ProtocolError, validate_e164
from softphone.tui.clock import Clock, format_duration
from softphone.tui.config import TuiConfig
from softphone.tui.history import CallHistory, HistoryEntry
from softphone.tui.state import CallView, PhoneState

log = logging.getLogger("audin.tui")
T = TypeVar("T")

DTMF_TYPE: Final = "application/dtmf"
"""Content type of the messages in which the far end reports each DTMF digit it heard."""

CALL_END_WAIT: Final = 5.0
"""Seconds quitting waits for the hung-up call to be recorded in the history."""

RETRY_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Pauses between attempts to reach the core at start-up (the last one repeats)."""

END_REASONS: Final = {
    "hangup": "you hung up",
    "remote_hangup": "the other party hung up",
    "taken_by_other": "answered by another operator",
    "rejected": "rejected",
    "no_answer": "no answer",
    "failed": "failed",
    "offline": "you went offline",
    "ignored": "ignored here",
    "cancelled": "cancelled",
}
_NORMAL_ENDS: Final = frozenset({"hangup", "remote_hangup", "ignored"})


class PhoneUI(Protocol):
    """What the controller needs from the user interface."""

    def state_changed(self) -> None: ...
    def problem(self, title: str, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def log_event(self, name: str, text: str, *, error: bool = False) -> None: ...
    def incoming(self, call: Call) -> None: ...
    def incoming_gone(self, call: Call, why: str) -> None: ...
    def watch_call(self, call: Call) -> None: ...


def is_e164(number: str) -> bool:
    try:
        validate_e164(number)
    except ProtocolError:
        return False
    return True


def describe_error(error: BaseException) -> str:
    if isinstance(error, OperatorError):
        return f"{error.code}: {error.message}"
    return f"{type(error).__name__}: {error}"


def end_text(call: Call) -> str:
    """Why a call ended, in words (an outbound call the far end refused: ``line busy``)."""
    reason = call.end_reason.value if call.end_reason is not None else "unknown"
    message = (call.end_message or "").strip()
    if reason == "rejected" and call.direction.value == "outbound":
        if message.lower() == "busy":
            return "line busy"
        return f"refused: {message}" if message else "refused by the other party"
    text = END_REASONS.get(reason, reason.replace("_", " "))
    if message and reason in ("failed", "no_answer", "cancelled"):
        text = f"{text}: {message}"
    return text


def describe_change(change: DevicesChange) -> str:
    """What a device re-scan found, in one line."""
    parts = []
    if change.added:
        parts.append("added " + ", ".join(d.name for d in change.added))
    if change.removed:
        parts.append("removed " + ", ".join(d.name for d in change.removed))
    for changed, device, what in (
        (change.default_input_changed, change.default_input, "microphone"),
        (change.default_output_changed, change.default_output, "speaker"),
    ):
        if changed:
            parts.append(f"default {what} now {device.name if device else 'none'}")
    return "; ".join(parts) or "no change"


def is_normal_end(call: Call) -> bool:
    """Ends the operator expects (hung up by either side, rejected or ignored here); the
    others are reported as problems."""
    reason = call.end_reason.value if call.end_reason is not None else "unknown"
    if reason == "rejected":
        return call.direction.value == "inbound"
    return reason in _NORMAL_ENDS


class Phone:
    """One operator console session."""

    def __init__(
        self,
        operator: Operator,
        config: TuiConfig,
        history: CallHistory,
        clock: Clock,
        ui: PhoneUI,
    ) -> None:
        self.operator = operator
        self.config = config
        self.history = history
        self.clock = clock
        self.ui = ui
        self.live_quality = True
        """False: keep the quality figures as they are (screenshots)."""
        self.state = PhoneState(sounds=operator.audio.sounds_enabled, home=operator.home)
        self._dtmf_lock = asyncio.Lock()
        self._call_gone = asyncio.Event()
        self._writes: set[asyncio.Task[None]] = set()
        self._reported_unreachable = False
        if config.input_device is not None:
            self.state.input_device = str(config.input_device)
        if config.output_device is not None:
            self.state.output_device = str(config.output_device)

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        """Load the history and, meanwhile, the account's numbers (retrying until the core
        answers)."""
        history = asyncio.ensure_future(self.reload_history())
        try:
            for attempt in range(1_000_000):
                if await self.load_numbers():
                    break
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
        finally:
            await history
        if self.config.online_on_start and self.state.presence == PresenceState.OFFLINE:
            await self.go_online()

    async def reload_history(self) -> None:
        try:
            self.state.history = await self.history.recent()
        except Exception as exc:  # a damaged file must not stop the phone
            self.ui.problem("Call history unavailable", f"{self.history.path}: {exc}")
            return
        self.ui.state_changed()

    async def load_numbers(self) -> bool:
        """The account's numbers; False (reported) if the core or the token source fails."""
        try:
            numbers = await self.operator.list_phone_numbers()
        except OperatorError as exc:
            if not self._reported_unreachable:
                self._reported_unreachable = True
                self.ui.problem("Cannot reach the core", describe_error(exc))
            self.ui.log_event("numbers", f"cannot list numbers: {describe_error(exc)}", error=True)
            self.state.last_error = describe_error(exc)
            self.ui.state_changed()
            return False
        if self._reported_unreachable:
            self.ui.info(f"Connected to {self.operator.home}")
            self._reported_unreachable = False
        state = self.state
        state.numbers = numbers
        state.numbers_loaded = True
        state.home = self.operator.home
        wanted = set(self.config.numbers)
        state.wanted = {n.id for n in numbers if not wanted or n.phone_number in wanted}
        unknown = wanted - {n.phone_number for n in numbers}
        if unknown:
            self.ui.problem(
                "Not your numbers", f"{', '.join(sorted(unknown))} not on this account (config)"
            )
        mine = [n.phone_number for n in numbers]
        if self.config.caller_id in mine:
            state.caller_id = self.config.caller_id
        elif mine:
            if self.config.caller_id:
                self.ui.problem(
                    "Caller ID",
                    f"{self.config.caller_id} is not one of your numbers; using {mine[0]}",
                )
            state.caller_id = mine[0]
        self.ui.log_event("numbers", f"{len(numbers)} number(s): {', '.join(mine) or 'none'}")
        self.ui.state_changed()
        return True

    # ------------------------------------------------------------------ presence and numbers

    async def toggle_online(self) -> None:
        if self.state.presence in (
            PresenceState.ONLINE,
            PresenceState.CONNECTING,
            PresenceState.RECONNECTING,
        ):
            await self._attempt("Going offline", self.operator.go_offline())
        else:
            await self.go_online()

    async def go_online(self) -> None:
        if not self.state.numbers_loaded and not await self.load_numbers():
            return
        if not self.state.wanted:
            self.ui.problem("No number chosen", "pick a number to answer on (space) first")
            return
        await self._announce()

    async def _announce(self) -> None:
        ids = [n.id for n in self.state.numbers if n.id in self.state.wanted]
        result = await self._get("Going online", self.operator.go_online(ids))
        if isinstance(result, AvailabilityResult) and result.rejected:
            names = [self._number_name(i) for i in result.rejected]
            self.ui.problem("Numbers refused", f"the core refused {', '.join(names)}")
        self.ui.state_changed()

    def _number_name(self, number_id: str) -> str:
        number = self.state.number_by_id(number_id)
        return number.phone_number if number else number_id

    async def toggle_number(self, number_id: str) -> None:
        """Answer on this number too, or stop; applied at once when online."""
        wanted = self.state.wanted
        if number_id in wanted:
            wanted.discard(number_id)
        else:
            wanted.add(number_id)
        self.ui.state_changed()
        if self.state.presence == PresenceState.ONLINE:
            await self._announce()

    def set_caller_id(self, number_id: str) -> None:
        number = self.state.number_by_id(number_id)
        if number is not None:
            self.state.caller_id = number.phone_number
            self.ui.log_event("caller_id", f"caller ID is now {number.phone_number}")
            self.ui.state_changed()

    # ------------------------------------------------------------------ calls

    async def dial(self, number: str | None = None) -> None:
        """Call ``number`` (default: the typed one; with nothing typed, the last call's)."""
        state = self.state
        target = number if number is not None else state.dial
        if not target:
            if not state.history:
                self._refuse("Nothing to dial", "type a number first")
                return
            target = state.history[0].number
        if state.call is not None:
            self._refuse("Busy", "a call is in progress: hang it up first")
            return
        if not is_e164(target):
            self._refuse("Not a phone number", f"{target!r} is not E.164 (+ then up to 15 digits)")
            return
        call = await self._get(
            "Dial refused", self.operator.dial(target, caller_id=state.caller_id)
        )
        if call is None:
            return
        if number is None:
            state.dial = ""
        if not call.is_ended:  # an end already under way is reported by ``call_ended``
            state.call = CallView(call, created=self.clock.now())
            self.ui.watch_call(call)
        self.ui.log_event("dial", f"calling {target} from {call.from_} ({call.call_sid})")
        self.ui.state_changed()

    async def hangup(self) -> None:
        view = self.state.call
        if view is not None:
            await self._attempt("Hang up", view.call.hangup())

    async def toggle_mute(self) -> None:
        view = self.state.call
        if view is not None:
            await self._attempt("Mute", view.call.mute(not view.call.muted))

    async def send_dtmf(self, digit: str) -> None:
        """One DTMF digit; digits typed quickly go out in order at the keypad's pace."""
        view = self.state.call
        if view is None:
            return
        async with self._dtmf_lock:
            await self._attempt("DTMF", view.call.send_dtmf(digit))
        self.ui.state_changed()

    async def accept(self) -> None:
        offer = self.state.offer
        if offer is None:
            return
        view = CallView(offer, created=self.clock.now())
        self.state.call = view
        await self._attempt("Accept", offer.accept())
        if offer.is_ended and self.state.call is view:
            self.state.call = None
        self.ui.state_changed()

    async def reject(self) -> None:
        offer = self.state.offer
        if offer is not None:
            await self._attempt("Reject", offer.reject())

    async def ignore(self) -> None:
        offer = self.state.offer
        if offer is not None:
            await self._attempt("Ignore", offer.ignore())

    async def quit(self, *, hang_up: bool = False) -> None:
        """Go offline and close the operator. While a call is live the operator refuses
        (``OperatorError`` ``CALL_IN_PROGRESS``, raised: the app asks first) unless
        ``hang_up``: then every call is hung up and recorded in the history first."""
        if hang_up:
            with contextlib.suppress(OperatorError):
                await self.operator.disconnect_all()
            await self._calls_handled(CALL_END_WAIT)
        try:
            await self.operator.close(force=hang_up)
        except OperatorError as exc:
            if exc.code == ClientErrorCode.CALL_IN_PROGRESS:
                raise
            log.warning("closing the operator: %s", describe_error(exc))
        await self.flush()

    async def _calls_handled(self, timeout: float) -> None:
        """Wait (bounded) until the UI has handled the end of the call on screen."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.state.call is not None:
                    self._call_gone.clear()
                    await self._call_gone.wait()

    # ------------------------------------------------------------------ audio

    async def devices(self, kind: str) -> list[DeviceInfo] | None:
        found = await self._get("Audio devices", self.operator.audio.devices())
        if found is None:
            return None
        if kind == "input":
            return [d for d in found if d.max_input_channels > 0]
        return [d for d in found if d.max_output_channels > 0]

    async def select_device(self, kind: str, device: DeviceInfo) -> None:
        audio = self.operator.audio
        select = audio.select_input if kind == "input" else audio.select_output
        title = "Microphone" if kind == "input" else "Speaker"
        if not await self._attempt(title, select(device.name)):
            return
        if kind == "input":
            self.state.input_device = device.name
        else:
            self.state.output_device = device.name
        self.ui.log_event("audio", f"{title.lower()}: {device.name}")
        self.ui.state_changed()

    async def test_speaker(self) -> None:
        await self._audio_test("speaker", self.operator.audio.test_speaker)

    async def test_microphone(self) -> None:
        result = await self._audio_test(
            "microphone", lambda: self.operator.audio.test_microphone(3.0)
        )
        if isinstance(result, MicrophoneTest):
            if result.heard_something:
                self.ui.info(f"Microphone test: peak level {result.peak_level:.2f}")
            else:
                self.ui.problem(
                    "Microphone test", f"heard almost nothing (peak {result.peak_level:.2f})"
                )

    async def _audio_test(self, what: str, start: Callable[[], Awaitable[T]]) -> T | None:
        if self.state.audio_test is not None or self.state.call is not None:
            self.ui.problem("Audio test", "not during a call or another test")
            return None
        self.state.audio_test = what
        self.ui.state_changed()
        try:
            return await self._get(f"{what.capitalize()} test", start())
        finally:
            self.state.audio_test = None
            self.ui.state_changed()

    async def rescan(self) -> None:
        """Enumerate the audio devices again; a change arrives as ``devices_changed``
        (notified then), a lost device in use as an ``error``."""
        change = await self._get("Audio devices", self.operator.audio.rescan())
        if change is not None and not change.changed:
            inputs = sum(1 for d in change.devices if d.max_input_channels > 0)
            outputs = sum(1 for d in change.devices if d.max_output_channels > 0)
            text = f"no change ({inputs} microphone(s), {outputs} speaker(s))"
            self.ui.log_event("devices", text)
            self.ui.info(f"Audio devices: {text}")

    def toggle_sounds(self) -> None:
        audio = self.operator.audio
        audio.sounds_enabled = not audio.sounds_enabled
        self.state.sounds = audio.sounds_enabled
        self.ui.log_event("audio", f"sounds {'on' if self.state.sounds else 'off'}")
        self.ui.state_changed()

    # ------------------------------------------------------------------ engine events

    def handle(self, name: str, call: Call | None, args: Sequence[Any]) -> None:
        """One SDK event (operator-level when ``call`` is None)."""
        if call is None:
            self._operator_event(name, args)
        else:
            self._call_event(name, call, args)
        self.ui.state_changed()

    def _operator_event(self, name: str, args: Sequence[Any]) -> None:
        state = self.state
        value: Any = args[0] if args else None
        match name:
            case "presence_state_changed":
                previous, state.presence = state.presence, value
                state.home = self.operator.home
                state.identity = self.operator.identity or state.identity
                if value == PresenceState.OFFLINE:
                    state.accepted = set()
                    state.refused = set()
                if value == PresenceState.ONLINE and previous == PresenceState.RECONNECTING:
                    self.ui.info(f"Back online ({self.operator.home})")
                self.ui.log_event(name, f"presence {value}")
            case "availability_changed":
                state.accepted = set(value.accepted)
                state.refused = set(value.rejected)
                names = ", ".join(self._number_name(i) for i in value.accepted) or "none"
                self.ui.log_event(name, f"answering on {names}")
            case "incoming_call":
                assert isinstance(value, Call)
                state.offer = value
                self.ui.watch_call(value)
                self.ui.log_event(name, f"{value.from_} calls {value.to} ({value.call_sid})")
                self.ui.incoming(value)
            case "call_started":
                assert isinstance(value, Call)
                view = state.call
                if view is None or view.call is not value:
                    view = state.call = CallView(value, created=self.clock.now())
                view.answered = self.clock.now()
                if state.offer is value:
                    state.offer = None
                self.ui.log_event(name, f"connected with {view.remote} ({value.call_sid})")
            case "call_ended":
                assert isinstance(value, Call)
                self._call_ended(value)
            case "call_reconnecting" | "call_reconnected":
                self.ui.log_event(name, f"media leg {name.removeprefix('call_')}", error=False)
            case "token_will_expire":
                self.ui.log_event(name, f"session token expires in {float(value):.0f} s; renewing")
            case "devices_changed":
                what = describe_change(value)
                self.ui.log_event(name, what)
                self.ui.info(f"Audio devices: {what}")
            case "error":
                text = describe_error(value)
                state.last_error = text
                self.ui.log_event(name, text, error=True)
                self.ui.problem("Error", text)
            case _:
                self.ui.log_event(name, " ".join(_show(a) for a in args))

    def _call_ended(self, call: Call) -> None:
        state = self.state
        why = end_text(call)
        reason = call.end_reason.value if call.end_reason is not None else "unknown"
        self.ui.log_event(
            "call_ended", f"{call.call_sid} ended: {why}", error=not is_normal_end(call)
        )
        was_offer = state.offer is call
        if was_offer:
            state.offer = None
            self.ui.incoming_gone(call, why)
        view = state.call
        answered = None
        if view is not None and view.call is call:
            answered = view.answered
            state.call = None
            self._call_gone.set()
        remote = call.to if call.direction.value == "outbound" else call.from_
        state.last_call = f"{remote}: {why}"
        if not was_offer and not is_normal_end(call):
            state.last_error = f"call with {remote}: {why}"
            self.ui.problem("Call ended", f"{remote}: {why}")
        now = self.clock.now()
        created = view.created if view is not None and view.call is call else now
        entry = HistoryEntry(
            started_at=created,
            direction=call.direction.value,
            number=call.to if call.direction.value == "outbound" else call.from_,
            local_number=call.from_ if call.direction.value == "outbound" else call.to,
            duration=(now - answered).total_seconds() if answered is not None else 0.0,
            end_reason=reason,
            call_sid=call.call_sid,
        )
        state.history.insert(0, entry)
        task = asyncio.get_running_loop().create_task(self._store(entry))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    @property
    def saving(self) -> bool:
        """True while a call is being written to the history database."""
        return bool(self._writes)

    async def flush(self) -> None:
        """Wait for the history writes in progress."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _store(self, entry: HistoryEntry) -> None:
        try:
            await self.history.add(entry)
        except Exception as exc:
            self.ui.problem("Call history", f"cannot save the call: {exc}")

    def _call_event(self, name: str, call: Call, args: Sequence[Any]) -> None:
        view = self.state.call
        current = view if view is not None and view.call is call else None
        match name:
            case "muted":
                if current is not None:
                    current.muted = bool(args[0])
                self.ui.log_event(f"call.{name}", "muted" if args[0] else "unmuted")
            case "sample":
                if current is not None and self.live_quality:
                    current.sample = args[0]
                return  # once a second: not for the log
            case "warning" | "warning_cleared":
                if current is not None:
                    if name == "warning":
                        current.warnings.add(str(args[0]))
                    else:
                        current.warnings.discard(str(args[0]))
                self.ui.log_event(f"call.{name}", str(args[0]), error=name == "warning")
            case "ringing":
                early = bool(args and args[0])
                self.ui.log_event(f"call.{name}", "ringing (early media)" if early else "ringing")
            case "message_received":
                content, content_type = str(args[0]), str(args[1])
                if current is not None:
                    if content_type == DTMF_TYPE:
                        current.heard += content
                    else:
                        current.messages.append((content_type, content))
                self.ui.log_event(f"call.{name}", f"{content_type}: {content}")
            case "error":
                return  # the operator's ``error`` event carries it too
            case _:
                self.ui.log_event(f"call.{name}", " ".join(_show(a) for a in args))

    # ------------------------------------------------------------------ helpers

    async def _attempt(self, title: str, work: Awaitable[object]) -> bool:
        """Await ``work``; an SDK failure becomes a notification and a log line (False)."""
        try:
            await work
        except (OperatorError, OSError, TimeoutError, ValueError) as exc:
            self._failed(title, exc)
            return False
        return True

    async def _get(self, title: str, work: Awaitable[T]) -> T | None:
        """Like :meth:`_attempt`, for work with a result (None when it failed)."""
        try:
            return await work
        except (OperatorError, OSError, TimeoutError, ValueError) as exc:
            self._failed(title, exc)
            return None

    def _failed(self, title: str, exc: BaseException) -> None:
        self._refuse(title, describe_error(exc))

    def _refuse(self, title: str, text: str) -> None:
        """A refused action: the status line, the log and a notification."""
        self.state.last_error = f"{title}: {text}" if title not in text else text
        self.ui.log_event("error", f"{title}: {text}", error=True)
        self.ui.problem(title, text)
        self.ui.state_changed()

    def call_timer(self) -> str:
        view = self.state.call
        if view is None or view.answered is None:
            return "0:00"
        return format_duration((self.clock.now() - view.answered).total_seconds())

    def token_left(self) -> float | None:
        """Seconds until the session token in use expires (None: no token in use)."""
        expires = self.operator.token_expires_at
        if expires is None:
            return None
        return (expires - self.clock.now()).total_seconds()


def _show(value: Any) -> str:
    if isinstance(value, Call):
        return f"{value.call_sid} {value.state.value}"
    if isinstance(value, str) and len(value) > 40 and " " not in value:
        return redact(value)  # a long opaque string may be a token: never shown whole
    return str(value)
