"""Dialpad: the number being typed and whether it is a valid E.164 number."""

from __future__ import annotations

from rich.text import Text

from softphone.tui.phone import Phone, is_e164
from softphone.tui.widgets.panel import TextPanel


class DialPad(TextPanel):
    def __init__(self, phone: Phone, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phone = phone
        self.border_title = "Dial"

    def build(self) -> Text:
        state = self.phone.state
        text = Text(no_wrap=True, overflow="ellipsis")
        if state.call is not None:
            text.append("in a call: digits send DTMF", style="dim")
            return text
        number = state.dial
        if not number:
            text.append("number + d to call · d alone: redial", style="dim")
            return text
        text.append(number, style="bold")
        text.append("▏", style="blink")
        if is_e164(number):
            text.append("  ✓ E.164", style="green")
        else:
            text.append("  ✗ +country code and number", style="yellow")
        return text
