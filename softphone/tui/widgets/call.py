"""Call: state, direction, remote party, timer, mute, DTMF sent, quality and warnings."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from softphone.tui.phone import Phone

STATE_STYLES = {
    "active": "bold green",
    "ringing": "bold yellow",
    "connecting": "yellow",
    "reconnecting": "bold yellow",
    "pending": "yellow",
    "ended": "dim",
}


class CallPanel(Static):
    def __init__(self, phone: Phone, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phone = phone
        self.border_title = "Call"

    def render(self) -> Text:
        view = self.phone.state.call
        text = Text(no_wrap=True, overflow="ellipsis")
        if view is None:
            text.append("no call", style="dim")
            last = self.phone.state.history[0] if self.phone.state.history else None
            if last is not None:
                text.append(f"\nlast: {last.number} ({last.end_reason})", style="dim")
            return text
        call = view.call
        state = call.state.value
        arrow = "→" if call.direction.value == "outbound" else "←"
        text.append(state.upper(), style=STATE_STYLES.get(state, ""))
        text.append(f"  {arrow} {view.remote}", style="bold")
        text.append(f"  {self.phone.call_timer()}")
        if view.muted:
            text.append("  MUTED", style="bold white on red")
        text.append(f"\n{call.direction.value} via {view.local}", style="dim")
        text.append("\nDTMF ")
        text.append(call.dtmf_sent or "-", style="bold" if call.dtmf_sent else "dim")
        if view.received:
            text.append(f"  heard {''.join(view.received)[-12:]}", style="dim")
        sample = view.sample
        text.append("\n")
        if sample is None:
            text.append("quality: waiting for the first second", style="dim")
        else:
            mos_style = "green" if sample.mos >= 4 else "yellow" if sample.mos >= 3 else "red"
            text.append("MOS ")
            text.append(f"{sample.mos:.2f}", style=mos_style)
            text.append(f"  jitter {sample.jitter_ms:.1f} ms")
            rtt = "-" if sample.rtt_ms is None else f"{sample.rtt_ms:.0f} ms"
            text.append(f"  RTT {rtt}")
        if view.warnings:
            text.append("\n⚠ " + ", ".join(sorted(view.warnings)), style="bold yellow")
        return text
