"""The simulated telephone network of the sandbox: destinations and far ends.

A *destination* is what an outbound call reaches (a number of the 555-01xx range); it
drives the call's progress (ringing, answer, busy...) through :class:`CallControl`. A
*far end* is the party on the other side of an answered call: it receives the operator's
audio frames and DTMF and sends frames back through :class:`FarEndLink`. Inbound calls
placed with ``audin-core inbound`` are answered by the operator; their caller is a far end
too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Final, Protocol

from softphone.protocol import EndReason

ECHO_NUMBER: Final = "+15550100"
DTMF_CONTENT_TYPE: Final = "application/dtmf"


class FarEndLink(Protocol):
    """What a far end may do to its call."""

    async def send_audio(self, payload: bytes) -> None:
        """Send 20 ms of G.711 audio (160 bytes) to the operator."""

    async def hangup(self) -> None:
        """The far end hangs up (the operator sees ``remote_hangup``)."""

    async def send_message(self, content: str, content_type: str = "text/plain") -> None:
        """Send a ``call_message`` to the operator."""


class CallControl(Protocol):
    """What a destination may do while it has not answered yet."""

    async def ringing(self, *, early_media: bool) -> None: ...

    async def answer(self, far_end: FarEnd) -> None: ...

    async def end(self, reason: EndReason, message: str) -> None: ...


class FarEnd(ABC):
    """The remote party of an answered call."""

    def attach(self, link: FarEndLink) -> None:
        self.link = link

    @abstractmethod
    async def on_audio(self, payload: bytes) -> None:
        """20 ms of audio from the operator (silence while muted)."""

    async def on_dtmf(self, digits: str) -> None:  # noqa: B027 (optional hook)
        """DTMF digits from the operator."""

    async def on_message(self, content: str, content_type: str) -> None:  # noqa: B027
        """A ``send_message`` from the operator (optional hook)."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """The call ended; release what the far end holds."""


class EchoFarEnd(FarEnd):
    """Plays back every frame it receives at once (the lowest delay the core can give),
    reports the DTMF digits it hears as ``call_message`` ``application/dtmf``, and sends
    every message it receives straight back."""

    async def on_audio(self, payload: bytes) -> None:
        await self.link.send_audio(payload)

    async def on_dtmf(self, digits: str) -> None:
        await self.link.send_message(digits, DTMF_CONTENT_TYPE)

    async def on_message(self, content: str, content_type: str) -> None:
        await self.link.send_message(content, content_type)


class Destination(ABC):
    number: str
    name: str

    @abstractmethod
    async def connect(self, control: CallControl) -> None:
        """Drive the call until it is answered (``control.answer``) or ended (``control.end``)."""


class EchoLine(Destination):
    number = ECHO_NUMBER
    name = "echo line"

    async def connect(self, control: CallControl) -> None:
        await control.answer(EchoFarEnd())


class SimulatedNetwork:
    """Routes outbound calls to the destinations of the sandbox network."""

    def __init__(self) -> None:
        self._destinations: dict[str, Destination] = {}
        self.add(EchoLine())

    def add(self, destination: Destination) -> None:
        self._destinations[destination.number] = destination

    def route(self, number: str) -> Destination | None:
        return self._destinations.get(number)

    def describe(self) -> list[tuple[str, str]]:
        return sorted((d.number, d.name) for d in self._destinations.values())

    def inbound_caller(self) -> FarEnd:
        """The far end of a call placed with ``audin-core inbound``: it echoes the operator."""
        return EchoFarEnd()
