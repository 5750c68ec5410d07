"""The call's audio format inside softphone.media: 8 kHz mono int16 in 20 ms frames."""

from __future__ import annotations

from typing import Final

SAMPLE_RATE: Final = 8000
FRAME_MS: Final = 20
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000  # 160
