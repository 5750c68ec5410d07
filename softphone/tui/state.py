"""What the console shows, as plain data: the widgets render it, the controller changes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from softphone.engine import Call, PhoneNumber, PresenceState
from softphone.engine.quality import CallSample
from softphone.tui.history import HistoryEntry


@dataclass
class CallView:
    """The call in progress (outbound from dialling, inbound from accepting)."""

    call: Call
    created: datetime
    answered: datetime | None = None
    muted: bool = False
    sample: CallSample | None = None
    warnings: set[str] = field(default_factory=set)
    heard: str = ""
    """DTMF the far end reported hearing (``application/dtmf`` messages, e.g. the echo line)."""
    messages: list[tuple[str, str]] = field(default_factory=list)
    """Other messages from the far end as (content type, content), e.g. an IVR's entries."""

    @property
    def remote(self) -> str:
        return self.call.to if self.call.direction.value == "outbound" else self.call.from_

    @property
    def local(self) -> str:
        return self.call.from_ if self.call.direction.value == "outbound" else self.call.to


@dataclass
class PhoneState:
    presence: PresenceState = PresenceState.OFFLINE
    identity: str | None = None
    home: str = ""
    numbers: list[PhoneNumber] = field(default_factory=list)
    numbers_loaded: bool = False
    wanted: set[str] = field(default_factory=set)
    """Ids of the numbers the operator wants to answer on."""
    accepted: set[str] = field(default_factory=set)
    """Ids the core confirmed while online."""
    refused: set[str] = field(default_factory=set)
    """Numbers the core refused to put this operator online on (not in its token)."""
    caller_id: str | None = None
    dial: str = ""
    call: CallView | None = None
    offer: Call | None = None
    last_error: str | None = None
    last_call: str | None = None
    """How the last call of this session ended (``+15550102: line busy``)."""
    input_device: str = "system default"
    output_device: str = "system default"
    sounds: bool = True
    audio_test: str | None = None
    """An audio test in progress (``speaker`` / ``microphone``)."""
    history: list[HistoryEntry] = field(default_factory=list)

    @property
    def in_call(self) -> bool:
        return self.call is not None

    def number_by_id(self, number_id: str) -> PhoneNumber | None:
        return next((n for n in self.numbers if n.id == number_id), None)
