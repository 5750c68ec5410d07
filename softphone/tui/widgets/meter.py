"""A text level meter (0..1), fine over SSH: no graphics, no colours needed."""

from __future__ import annotations

from rich.text import Text


def meter(level: float, width: int) -> Text:
    """``▮▮▮▮▯▯▯▯``: green, then yellow above 0.6, red above 0.85."""
    level = min(1.0, max(0.0, level))
    filled = round(level * width)
    text = Text(no_wrap=True)
    for i in range(width):
        if i >= filled:
            text.append("·", style="dim")
            continue
        at = (i + 1) / width
        text.append("▮", style="red" if at > 0.85 else "yellow" if at > 0.6 else "green")
    return text
