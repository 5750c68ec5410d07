"""Real-time audio of the simulated parties: one 20 ms frame every 20 ms.

A :class:`Playout` is what a simulated far end (or a ringing destination's early media)
sends: the clips queued with :meth:`Playout.play`, one after the other, and silence when
none is queued, as a telephone line does. Its clock is a deadline that advances by exactly
20 ms per frame (``deadline += 0.02``), so the sending rate does not drift with the time
each send takes or the event loop's scheduling delays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from softphone.protocol.frames import FRAME_SAMPLES
from softphone.server.voices import SAMPLE_RATE, Samples

FRAME_SECONDS: Final = FRAME_SAMPLES / SAMPLE_RATE
MAX_LAG: Final = 0.2
"""A sender more than this far behind its clock (a stalled event loop) restarts the clock
from now instead of sending the missed frames in a burst."""

SendPcm = Callable[[Samples], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _Clip:
    samples: Samples
    future: asyncio.Future[bool]
    loop: bool
    position: int = 0


class Playout:
    """Paced outgoing audio of one simulated party; :meth:`run` is its sending task."""

    def __init__(self, send: SendPcm) -> None:
        self._send = send
        self._queue: deque[_Clip] = deque()
        self._silence: Samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.frames_sent = 0

    def play(self, samples: Samples, *, loop: bool = False) -> asyncio.Future[bool]:
        """Queue ``samples`` (whole 20 ms frames) after what is queued. The future resolves
        True once its last frame was sent, False if :meth:`clear` dropped it first; a
        ``loop``-ing clip repeats until cleared."""
        if samples.size == 0 or samples.size % FRAME_SAMPLES:
            raise ValueError("a clip must be whole 20 ms frames (a multiple of 160 samples)")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(_Clip(samples, done, loop))
        return done

    def clear(self) -> None:
        """Stop what plays now and drop what is queued (barge-in); silence follows."""
        while self._queue:
            clip = self._queue.popleft()
            if not clip.future.done():
                clip.future.set_result(False)

    @property
    def idle(self) -> bool:
        return not self._queue

    def _next_frame(self) -> tuple[Samples, _Clip | None]:
        """The frame to send now and the clip this frame finishes, if any."""
        if not self._queue:
            return self._silence, None
        clip = self._queue[0]
        start = clip.position
        frame = clip.samples[start : start + FRAME_SAMPLES]
        clip.position = start + FRAME_SAMPLES
        if clip.position < clip.samples.size:
            return frame, None
        if clip.loop:
            clip.position = 0
            return frame, None
        self._queue.popleft()
        return frame, clip

    async def run(self) -> None:
        """Send one frame every 20 ms until cancelled; then the futures of the clips still
        queued are cancelled and the queue is emptied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        try:
            while True:
                frame, finished = self._next_frame()
                await self._send(frame)
                self.frames_sent += 1
                if finished is not None and not finished.future.done():
                    finished.future.set_result(True)
                deadline += FRAME_SECONDS
                now = loop.time()
                if now - deadline > MAX_LAG:
                    deadline = now
                await asyncio.sleep(max(0.0, deadline - now))
        finally:
            for clip in self._queue:
                clip.future.cancel()
            self._queue.clear()

    async def run_for(self, seconds: float) -> None:
        """Send for ``seconds``, then stop as :meth:`run` does when cancelled."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.run()
