"""The simulated telephone network of the sandbox: destinations and far ends.

A *destination* is what an outbound call reaches (a number of the 555-01xx range); it
drives the call's progress (ringing, early media, answer, busy...) through
:class:`CallControl`. A *far end* is the party on the other side of an answered call: it
receives the operator's audio frames and DTMF and sends frames back through
:class:`FarEndLink`. Inbound calls placed with ``audin-core inbound`` or by the caller
generator are answered by the operator; their caller is a far end too.

docs/sandbox.md describes every number; :class:`~softphone.server.timings.CoreTimings`
holds the delays.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final, Protocol

from softphone.media.tones import ringback
from softphone.protocol import EndReason
from softphone.server.playout import Playout
from softphone.server.timings import CoreTimings
from softphone.server.voices import (
    DEFAULT_ASSETS_DIR,
    Samples,
    VoiceAssetError,
    Voices,
    pad_to_frames,
    silence,
)

log = logging.getLogger("audin.core")

ECHO_NUMBER: Final = "+15550100"
IVR_NUMBER: Final = "+15550101"
BUSY_NUMBER: Final = "+15550102"
NO_ANSWER_NUMBER: Final = "+15550103"
FAILING_NUMBER: Final = "+15550104"
SPEECH_NUMBER: Final = "+15550105"

DTMF_CONTENT_TYPE: Final = "application/dtmf"
"""``call_message`` of the echo line: the DTMF digits of one ``dtmf`` message it heard."""
IVR_DIGITS_CONTENT_TYPE: Final = "application/x-ivr-digits"
"""``call_message`` of the IVR: one complete entry (the keys before ``#`` or the timeout)."""

BUSY_MESSAGE: Final = "busy"
FAILING_MESSAGE: Final = (
    "the network could not connect the call (+15550104 is the sandbox's failing line)"
)
PAUSE_KEY: Final = "w"
END_KEY: Final = "#"


class FarEndLink(Protocol):
    """What a far end may do to its call (only while the call is in progress)."""

    def send_audio(self, payload: bytes) -> None:
        """Send 20 ms of G.711 audio (160 bytes, the media leg's codec) to the operator,
        now (a frame the operator's link cannot take is dropped, never queued)."""

    async def send_pcm(self, samples: Samples) -> None:
        """Send 20 ms of audio (160 ``int16`` samples), encoded with the media leg's codec."""

    async def hangup(self) -> None:
        """The far end hangs up (the operator sees ``remote_hangup``)."""

    async def send_message(self, content: str, content_type: str = "text/plain") -> None:
        """Send a ``call_message`` to the operator."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of the call: the core cancels it when the call ends."""


class CallControl(Protocol):
    """What a destination may do while it has not answered yet."""

    async def ringing(self, *, early_media: bool) -> None: ...

    async def send_pcm(self, samples: Samples) -> None:
        """Early media: 20 ms of audio while ringing; dropped unless ``ringing`` said
        ``early_media=True``."""

    async def answer(self, far_end: FarEnd) -> None: ...

    async def end(self, reason: EndReason, message: str) -> None: ...


class FarEnd(ABC):
    """The remote party of an answered call."""

    def attach(self, link: FarEndLink) -> None:
        self.link = link

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """The call is answered and ``link`` attached: start talking (optional hook)."""

    @abstractmethod
    def on_audio(self, payload: bytes) -> None:
        """20 ms of audio from the operator (silence while muted), as it arrives.

        Synchronous and on the relay's hot path (50 calls a second per call, inside the
        socket's receive callback): do not block; start a task with ``link.spawn`` for
        anything slow."""

    async def on_dtmf(self, digits: str) -> None:  # noqa: B027 (optional hook)
        """DTMF digits from the operator."""

    async def on_message(self, content: str, content_type: str) -> None:  # noqa: B027
        """A ``send_message`` from the operator (optional hook)."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """The call ended; release what the far end holds. Tasks started with
        ``link.spawn`` are cancelled by the core."""


class EchoFarEnd(FarEnd):
    """Plays back every frame it receives at once (the lowest delay the core can give),
    reports the DTMF digits it hears as ``call_message`` ``application/dtmf``, and sends
    every message it receives straight back."""

    def on_audio(self, payload: bytes) -> None:
        self.link.send_audio(payload)

    async def on_dtmf(self, digits: str) -> None:
        await self.link.send_message(digits, DTMF_CONTENT_TYPE)

    async def on_message(self, content: str, content_type: str) -> None:
        await self.link.send_message(content, content_type)


class IvrFarEnd(FarEnd):
    """An interactive voice response: speaks its menu, collects keys, reads them back.

    An entry is the keys pressed until ``#`` or until ``digit_timeout`` seconds pass
    without a key (``w`` pauses are ignored). The first key of an entry stops whatever
    the IVR is saying (barge-in). A complete entry is sent to the operator at once as
    ``call_message`` ``application/x-ivr-digits`` (content: the keys, e.g. ``"123"``),
    then read back ("You entered one two three"); the IVR then waits for the next entry.
    ``#`` alone (an empty entry) repeats the menu. The IVR never hangs up by itself.
    """

    def __init__(self, voices: Voices, digit_timeout: float) -> None:
        self._voices = voices
        self._digit_timeout = digit_timeout
        self._keys: asyncio.Queue[str] = asyncio.Queue()

    async def start(self) -> None:
        out = Playout(self.link.send_pcm)
        self.link.spawn(out.run())
        out.play(self._voices.ivr_menu)
        self.link.spawn(self._serve(out))

    def on_audio(self, payload: bytes) -> None:
        """The IVR listens for keys only: the operator's voice is not used."""

    async def on_dtmf(self, digits: str) -> None:
        for key in digits:
            if key != PAUSE_KEY:
                self._keys.put_nowait(key)

    async def _serve(self, out: Playout) -> None:
        while True:
            entry = await self._read_entry(out)
            if not entry:
                out.play(self._voices.ivr_menu)
                continue
            await self.link.send_message(entry, IVR_DIGITS_CONTENT_TYPE)
            out.play(self._voices.readback(entry))

    async def _read_entry(self, out: Playout) -> str:
        key = await self._keys.get()
        out.clear()
        entry = ""
        while key != END_KEY:
            entry += key
            try:
                async with asyncio.timeout(self._digit_timeout):
                    key = await self._keys.get()
            except TimeoutError:
                break
        return entry


class SpeechFarEnd(FarEnd):
    """A party that talks: plays a recording ``plays`` times, each followed by ``pause``
    seconds of silence, then hangs up (``remote_hangup``). It does not listen."""

    def __init__(self, recording: Samples, plays: int, pause: float) -> None:
        self._recording = recording
        self._plays = plays
        self._pause = silence(pause) if pause > 0 else None

    async def start(self) -> None:
        out = Playout(self.link.send_pcm)
        self.link.spawn(out.run())
        self.link.spawn(self._talk(out))

    def on_audio(self, payload: bytes) -> None:
        """A recording does not listen: the operator's audio is not used."""

    async def _talk(self, out: Playout) -> None:
        for _ in range(self._plays):
            await out.play(self._recording)
            if self._pause is not None:
                await out.play(self._pause)
        await self.link.hangup()


class Destination(ABC):
    number: str
    name: str

    def __init__(self, network: SimulatedNetwork) -> None:
        self.network = network

    @property
    def timings(self) -> CoreTimings:
        return self.network.timings

    @abstractmethod
    async def connect(self, control: CallControl) -> None:
        """Drive the call until it is answered (``control.answer``) or ended (``control.end``)."""


class EchoLine(Destination):
    """Rings ``echo_ring`` seconds (no early media), answers, echoes (:class:`EchoFarEnd`)."""

    number = ECHO_NUMBER
    name = "echo line"

    async def connect(self, control: CallControl) -> None:
        await control.ringing(early_media=False)
        await asyncio.sleep(self.timings.echo_ring)
        await control.answer(EchoFarEnd())


class IvrLine(Destination):
    """Rings ``ring`` seconds with early media (the network's ringback tone, 440 + 480 Hz),
    then answers with :class:`IvrFarEnd`."""

    number = IVR_NUMBER
    name = "IVR: menu, DTMF entry, readback"

    async def connect(self, control: CallControl) -> None:
        voices = self.network.voices_or_reason()
        if isinstance(voices, str):
            await control.end(EndReason.FAILED, voices)
            return
        await control.ringing(early_media=True)
        tone = Playout(control.send_pcm)
        tone.play(self.network.ringback, loop=True)
        await tone.run_for(self.timings.ring)
        await control.answer(IvrFarEnd(voices, self.timings.ivr_digit_timeout))


class BusyLine(Destination):
    """Declines after ``busy_delay`` seconds without ringing: ``rejected``, message "busy"."""

    number = BUSY_NUMBER
    name = "busy line"

    async def connect(self, control: CallControl) -> None:
        await asyncio.sleep(self.timings.busy_delay)
        await control.end(EndReason.REJECTED, BUSY_MESSAGE)


class NoAnswerLine(Destination):
    """Rings (no early media) until ``no_answer_timeout``, then ends ``no_answer``."""

    number = NO_ANSWER_NUMBER
    name = "no-answer line"

    async def connect(self, control: CallControl) -> None:
        await control.ringing(early_media=False)
        timeout = self.timings.no_answer_timeout
        await asyncio.sleep(timeout)
        await control.end(EndReason.NO_ANSWER, f"nobody answered {self.number} in {timeout:g} s")


class FailingLine(Destination):
    """Fails at once: ``failed`` with :data:`FAILING_MESSAGE`."""

    number = FAILING_NUMBER
    name = "failing line"

    async def connect(self, control: CallControl) -> None:
        await control.end(EndReason.FAILED, FAILING_MESSAGE)


class SpeechLine(Destination):
    """Rings ``ring`` seconds (no early media), answers, plays the recorded speech
    ``speech_plays`` times and hangs up (:class:`SpeechFarEnd`)."""

    number = SPEECH_NUMBER
    name = "recorded speech, then hangs up"

    async def connect(self, control: CallControl) -> None:
        voices = self.network.voices_or_reason()
        if isinstance(voices, str):
            await control.end(EndReason.FAILED, voices)
            return
        await control.ringing(early_media=False)
        await asyncio.sleep(self.timings.ring)
        await control.answer(self.network.speaker(voices))


class SimulatedNetwork:
    """Routes outbound calls to the destinations of the sandbox network and provides the
    callers of inbound calls."""

    def __init__(
        self, timings: CoreTimings | None = None, assets_dir: Path = DEFAULT_ASSETS_DIR
    ) -> None:
        self.timings = timings or CoreTimings()
        self._voices: Voices | None = None
        self.voices_problem: str | None = None
        try:
            self._voices = Voices.load(assets_dir)
        except VoiceAssetError as exc:
            self.voices_problem = (
                f"the sandbox voice clips are not available ({exc}); the IVR and the speech"
                " line need assets/sandbox/ of the source tree (CoreConfig.assets_dir)"
            )
        self.ringback = pad_to_frames(ringback().samples)
        self._destinations: dict[str, Destination] = {}
        for kind in (EchoLine, IvrLine, BusyLine, NoAnswerLine, FailingLine, SpeechLine):
            self.add(kind(self))

    def add(self, destination: Destination) -> None:
        self._destinations[destination.number] = destination

    def route(self, number: str) -> Destination | None:
        return self._destinations.get(number)

    def describe(self) -> list[tuple[str, str]]:
        return sorted((d.number, d.name) for d in self._destinations.values())

    def voices_or_reason(self) -> Voices | str:
        """The voice clips, or why they are not available."""
        if self._voices is not None:
            return self._voices
        return self.voices_problem or "the sandbox voice clips are not available"

    def speaker(self, voices: Voices) -> SpeechFarEnd:
        return SpeechFarEnd(voices.speech, self.timings.speech_plays, self.timings.speech_pause)

    def inbound_caller(self) -> FarEnd:
        """The far end of a call placed with ``audin-core inbound``: it echoes the operator."""
        return EchoFarEnd()

    def generated_caller(self) -> FarEnd:
        """The far end of a call placed by the caller generator: it talks (the recorded
        speech), then hangs up; it echoes when the voice clips are not available."""
        if self._voices is None:
            return EchoFarEnd()
        return self.speaker(self._voices)
