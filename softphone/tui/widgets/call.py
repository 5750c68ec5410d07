"""Call: state, direction, remote party, timer, mute, DTMF sent, what the far end sent back,
quality and warnings."""

from __future__ import annotations

from rich.text import Text

from softphone.tui.phone import Phone
from softphone.tui.widgets.panel import TextPanel

STATE_STYLES = {
    "active": "bold green",
    "ringing": "bold yellow",
    "connecting": "yellow",
    "reconnecting": "bold yellow",
    "pending": "yellow",
    "ended": "dim",
}


def short_type(content_type: str) -> str:
    """``application/x-ivr-digits`` -> ``ivr-digits``: enough to tell messages apart."""
    name = content_type.rsplit("/", 1)[-1]
    return name.removeprefix("x-")


class CallPanel(TextPanel):
    def __init__(self, phone: Phone, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.phone = phone
        self.border_title = "Call"

    def build(self) -> Text:
        view = self.phone.state.call
        text = Text(no_wrap=True, overflow="ellipsis")
        if view is None:
            text.append("no call", style="dim")
            phone = self.phone.state
            last = phone.history[0] if phone.history else None
            if phone.last_call is not None:
                text.append(f"\nlast: {phone.last_call}", style="dim")
            elif last is not None:
                reason = last.end_reason.replace("_", " ")
                text.append(f"\nlast: {last.number}: {reason}", style="dim")
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
        if view.messages:
            content_type, content = view.messages[-1]
            text.append(f"  {short_type(content_type)} ", style="dim")
            text.append(content, style="bold cyan")
        elif view.heard:
            text.append(f"  heard {view.heard[-12:]}", style="dim")
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
