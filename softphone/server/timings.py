"""Timers of the core and of its simulated network (docs/sandbox.md lists the defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CoreTimings:
    """Every delay of the core in seconds; tests shorten them, a deployment keeps the defaults."""

    offer_timeout: float = 30.0
    """Seconds an inbound call rings before it ends with ``no_answer`` (per call override)."""
    media_attach_timeout: float = 10.0
    """Seconds the core waits for a call's media leg after ``call_created`` or ``accept``."""
    media_reconnect_window: float = 10.0
    """Seconds a call survives without its media leg before it ends with ``failed``."""
    echo_ring: float = 0.5
    """Seconds the echo line (+15550100) rings, without early media, before it answers."""
    ring: float = 2.0
    """Seconds the IVR (+15550101, with early-media ringback) and the speech line
    (+15550105, without early media) ring before they answer."""
    busy_delay: float = 1.0
    """Seconds until the busy line (+15550102) declines the call (``rejected``, "busy")."""
    no_answer_timeout: float = 30.0
    """Seconds the no-answer line (+15550103) rings before the call ends ``no_answer``."""
    ivr_digit_timeout: float = 3.0
    """Seconds of keypad silence after a digit that end an IVR entry (as ``#`` does)."""
    speech_pause: float = 1.0
    """Seconds of silence after each play of the recorded speech (before the next play or
    the hang-up)."""
    speech_plays: int = 2
    """How many times the speech line and generated callers play their recording before
    hanging up (``remote_hangup``); a count, not seconds."""

    def __post_init__(self) -> None:
        for name in (
            "offer_timeout",
            "media_attach_timeout",
            "media_reconnect_window",
            "echo_ring",
            "ring",
            "busy_delay",
            "no_answer_timeout",
            "ivr_digit_timeout",
            "speech_pause",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"CoreTimings.{name} must not be negative")
        if self.speech_plays < 1:
            raise ValueError("CoreTimings.speech_plays must be at least 1")
