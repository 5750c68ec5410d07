"""Pick a microphone or a speaker from the devices PortAudio lists."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList
from textual.widgets.option_list import Option

from softphone.engine.audio import DeviceSpec
from softphone.media.devices import DeviceInfo


class DevicePicker(ModalScreen[DeviceInfo | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]  # noqa: RUF012

    def __init__(self, kind: str, devices: list[DeviceInfo], current: DeviceSpec) -> None:
        super().__init__(id="picker")
        self.kind = kind
        self.devices = devices
        self.current = current

    def _is_current(self, device: DeviceInfo) -> bool:
        if self.current is None:
            return device.is_default_input if self.kind == "input" else device.is_default_output
        if isinstance(self.current, int):
            return device.index == self.current
        return device.name == self.current

    def compose(self) -> ComposeResult:
        options = []
        for i, device in enumerate(self.devices):
            text = Text(no_wrap=True, overflow="ellipsis")
            text.append("● " if self._is_current(device) else "  ", style="green")
            text.append(device.name, style="bold")
            text.append(f"  {device.host_api}", style="dim")
            options.append(Option(text, id=str(i)))
        picker = OptionList(*options, id="picker-list")
        picker.border_title = "Microphone" if self.kind == "input" else "Speaker"
        picker.border_subtitle = "enter: use  esc: cancel"
        yield picker
        yield Footer()

    def on_mount(self) -> None:
        picker = self.query_one(OptionList)
        picker.focus()
        current = next((i for i, d in enumerate(self.devices) if self._is_current(d)), 0)
        picker.highlighted = current

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.devices[int(event.option.id or 0)])

    def action_cancel(self) -> None:
        self.dismiss(None)
