"""A text level meter (0..1), fine over SSH: no graphics, no colours needed."""

from __future__ import annotations

from rich.text import Text

YELLOW_FROM = 0.6
RED_FROM = 0.85


def cells(level: float, width: int) -> int:
    """How many of ``width`` cells a level fills."""
    return round(min(1.0, max(0.0, level)) * width)


def meter(level: float, width: int) -> Text:
    """``▮▮▮▮····``: green, then yellow above 0.6, red above 0.85 (one span per colour)."""
    filled = cells(level, width)
    text = Text(no_wrap=True)
    start = 0
    for style, upto in (("green", YELLOW_FROM), ("yellow", RED_FROM), ("red", 1.0)):
        # cell i (1-based position (i + 1) / width) takes the colour of the band it ends in
        end = min(filled, _first_above(upto, width))
        if end > start:
            text.append("▮" * (end - start), style=style)
            start = end
    if width > filled:
        text.append("·" * (width - filled), style="dim")
    return text


def _first_above(limit: float, width: int) -> int:
    """Number of cells whose position (i + 1) / width is at most ``limit``."""
    return sum(1 for i in range(width) if (i + 1) / width <= limit)
