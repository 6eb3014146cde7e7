"""Shared timers for generators that pace their events.

A thousand streams at ten tokens a second would be ten thousand timers a second, each
a loop wake-up of its own. A :class:`Pacer` puts wake-ups on a grid instead: every
sleeper due in the same ``resolution_s`` slot waits on a future of its own, and one
timer per slot wakes them all. A sleeper wakes at most ``resolution_s`` late, never
early.
"""

from __future__ import annotations

import asyncio
import math


class Pacer:
    def __init__(self, resolution_s: float = 0.005) -> None:
        self._resolution = resolution_s
        self._slots: dict[int, list[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def sleep_until(self, when: float) -> None:
        """Sleep until loop time ``when`` (rounded up to the grid); yield at least once."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): the old slots are dead
            self._loop, self._slots = loop, {}
        if when <= loop.time():
            await asyncio.sleep(0)
            return
        slot = math.ceil(when / self._resolution)
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._slots.get(slot)
        if waiters is None:
            self._slots[slot] = waiters = []
            loop.call_at(slot * self._resolution, self._fire, slot)
        waiters.append(fut)
        await fut

    def _fire(self, slot: int) -> None:
        for fut in self._slots.pop(slot, ()):
            if not fut.done():  # a cancelled sleeper's future is done already
                fut.set_result(None)


class Schedule:
    """An absolute schedule for one generation: each :meth:`wait` ``delay`` is due
    ``delay`` after the last one was, so the time spent between them (writing events)
    does not slow the rate down. A generation that fell behind (a stalled process)
    catches up by at most ``max_catch_up_s``."""

    def __init__(self, pacer: Pacer, max_catch_up_s: float) -> None:
        self._pacer = pacer
        self._max_catch_up = max_catch_up_s
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time()

    def restart(self) -> None:
        """Count from now (after a wait that is not part of the schedule)."""
        self._due = self._loop.time()

    async def wait(self, delay: float) -> None:
        if not delay:
            return
        self._due = max(self._due + delay, self._loop.time() - self._max_catch_up)
        # Behind schedule: no wait, but the loop still gets a turn.
        await self._pacer.sleep_until(self._due)
