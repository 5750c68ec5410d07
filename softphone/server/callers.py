"""The sandbox's caller generator: simulated customers who call the sandbox numbers.

While enabled, it waits a random interval (exponentially distributed with the configured
mean, so calls arrive as a Poisson process), then places an inbound call from a
random-looking North American number to one of the sandbox numbers on which an operator
is online and not on a call (so every call can be answered). The caller is the network's
generated caller (it speaks the recorded message, then hangs up). No free operator: no
call. At most :data:`MAX_UNFINISHED` of its calls are
unfinished at any time; beyond that it skips its turn. The call's ``params`` carry
``{"origin": "caller-generator"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Final

from softphone.protocol import ProtocolError
from softphone.protocol import http as api
from softphone.server.core import Core
from softphone.server.network import SimulatedNetwork

log = logging.getLogger("audin.core")

DEFAULT_MEAN_INTERVAL: Final = 20.0
MAX_UNFINISHED: Final = 3
ORIGIN_PARAMS: Final = {"origin": "caller-generator"}


def random_caller_number(rng: random.Random) -> str:
    """A random-looking NANP number ``+1 NPA NXX XXXX``: no N11 or N9X area code, no N11
    exchange, and never the 555 exchange (which holds the sandbox's own numbers)."""
    while True:
        area = rng.randint(200, 989)
        exchange = rng.randint(200, 999)
        if area % 100 == 11 or (area // 10) % 10 == 9 or exchange % 100 == 11:
            continue
        if exchange == 555:
            continue
        return f"+1{area}{exchange}{rng.randint(0, 9999):04d}"


class CallerGenerator:
    """Places inbound calls at random intervals while :attr:`enabled` (see the module doc).

    ``numbers`` are the ``(phone number id, E.164)`` pairs of ``account_id`` it may call;
    ``seed`` makes the intervals, callers and chosen numbers reproducible.
    """

    def __init__(
        self,
        core: Core,
        account_id: str,
        numbers: Sequence[tuple[str, str]],
        *,
        mean_interval: float = DEFAULT_MEAN_INTERVAL,
        seed: int | None = None,
    ) -> None:
        if mean_interval <= 0:
            raise ValueError("the mean interval must be positive")
        self._core = core
        self._account_id = account_id
        self._numbers = tuple(numbers)
        self._rng = random.Random(seed)
        self.mean_interval = mean_interval
        self.calls_placed = 0
        self._placed: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._task is not None

    def state(self) -> api.CallerGeneratorState:
        return api.CallerGeneratorState(
            enabled=self.enabled,
            mean_interval_seconds=self.mean_interval,
            numbers=[number for _, number in self._numbers],
            calls_placed=self.calls_placed,
        )

    async def configure(self, *, enabled: bool, mean_interval: float | None = None) -> None:
        """Switch on or off; a new ``mean_interval`` applies from now (the pending wait is
        drawn again)."""
        was_on = self.enabled
        if mean_interval is not None:
            if mean_interval <= 0:
                raise ValueError("the mean interval must be positive")
            if mean_interval != self.mean_interval:
                self.mean_interval = mean_interval
                await self.stop()
        if enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="caller-generator"
            )
            log.info("caller generator on (mean interval %g s)", self.mean_interval)
        elif not enabled and was_on:
            await self.stop()
            log.info("caller generator off (%d calls placed)", self.calls_placed)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._rng.expovariate(1.0 / self.mean_interval))
            try:
                await self.place_call()
            except Exception:
                log.exception("caller generator: placing a call failed")

    def _free_numbers(self) -> list[tuple[str, str]]:
        """The numbers on which an operator of the account is online and not on a call."""
        free: set[str] = set()
        for session in self._core.sessions.values():
            if (
                session.claims.account_id == self._account_id
                and not session.closed
                and not self._core.has_active_call(session.operator_key)
            ):
                free |= session.availability
        return [(pn_id, number) for pn_id, number in self._numbers if pn_id in free]

    async def place_call(self) -> str | None:
        """Place one call now, unless no operator is online and free or too many of its calls
        are unfinished; returns its call SID."""
        self._placed &= set(self._core.calls)
        if len(self._placed) >= MAX_UNFINISHED:
            log.debug("caller generator: %d calls unfinished, skipping", len(self._placed))
            return None
        targets = self._free_numbers()
        if not targets:
            log.debug("caller generator: no free operator online on its numbers, skipping")
            return None
        _, to = self._rng.choice(targets)
        caller = random_caller_number(self._rng)
        network = self._core.network
        if not isinstance(network, SimulatedNetwork):  # the generator is the sandbox's
            log.warning("caller generator: the core has no simulated network to call from")
            return None
        try:
            sid, offered = await self._core.place_inbound(
                caller, to, dict(ORIGIN_PARAMS), far_end=network.generated_caller()
            )
        except ProtocolError as exc:
            log.warning("caller generator could not call %s: %s", to, exc.message)
            return None
        self._placed.add(sid)
        self.calls_placed += 1
        log.info("caller generator: %s calls %s (%s, offered to %d)", caller, to, sid, offered)
        return sid
