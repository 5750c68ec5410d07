"""Status: presence (colour-coded), identity, the core in use, token expiry, last error."""

from __future__ import annotations

from rich.text import Text

from softphone.engine import PresenceState
from softphone.tui.clock import format_duration
from softphone.tui.phone import Phone
from softphone.tui.widgets.panel import TextPanel

PRESENCE_STYLES = {
    PresenceState.ONLINE: "bold green",
    PresenceState.CONNECTING: "bold yellow",
    PresenceState.RECONNECTING: "bold yellow",
    PresenceState.OFFLINE: "bold red",
    PresenceState.DESTROYED: "dim",
}


class StatusBar(TextPanel):
    """Two lines at the top of the screen."""

    def __init__(self, phone: Phone, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phone = phone

    def build(self) -> Text:
        state = self.phone.state
        text = Text(no_wrap=True, overflow="ellipsis")
        presence = state.presence
        text.append("● ", style=PRESENCE_STYLES.get(presence, ""))
        text.append(presence.value.upper(), style=PRESENCE_STYLES.get(presence, ""))
        text.append("  ")
        text.append(state.identity or "(not connected)", style="bold")
        text.append("  core ")
        text.append(state.home or "-", style="cyan")
        left = self.phone.token_left()
        text.append("  token ")
        if left is None:
            text.append("-", style="dim")
        elif left <= 0:
            text.append("expired", style="bold red")
        else:
            text.append(format_duration(left), style="yellow" if left < 60 else "")
        if not state.sounds:
            text.append("  sounds off", style="dim")
        text.append("\n")
        if state.last_error:
            text.append("last error: ", style="bold red")
            text.append(state.last_error, style="red")
        else:
            text.append("no errors", style="dim")
        return text
