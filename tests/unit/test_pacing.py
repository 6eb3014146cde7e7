"""The shared pacer: sleepers wake on time (never early, at most one slot late), a
cancelled sleeper leaves the others alone, and a hundred sleepers share a few timers."""

from __future__ import annotations

import asyncio

from workers.pacing import Pacer


async def test_sleepers_wake_not_early_and_at_most_a_slot_late() -> None:
    pacer = Pacer(resolution_s=0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    dues = [start + 0.02 + 0.003 * i for i in range(20)]

    async def sleeper(due: float) -> float:
        await pacer.sleep_until(due)
        return loop.time() - due

    lateness = await asyncio.gather(*(sleeper(d) for d in dues))
    assert all(x >= -0.001 for x in lateness), lateness  # loop clock granularity
    # One slot late at most, plus what a machine busy with the rest of the suite (run in
    # parallel) can delay a loop by: the bound catches a pacer that waits a whole extra
    # period or never wakes, not scheduling noise.
    assert max(lateness) < 0.01 + 0.5, lateness


async def test_a_cancelled_sleeper_does_not_wake_or_break_the_others() -> None:
    pacer = Pacer(resolution_s=0.01)
    loop = asyncio.get_running_loop()
    due = loop.time() + 0.03
    woke: list[int] = []

    async def sleeper(i: int) -> None:
        await pacer.sleep_until(due)
        woke.append(i)

    tasks = [asyncio.create_task(sleeper(i)) for i in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.wait(tasks)
    assert sorted(woke) == [0, 2]
    assert tasks[1].cancelled()


async def test_a_past_due_time_still_yields_to_the_loop() -> None:
    pacer = Pacer()
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    other = loop.call_soon(ran.append, "other")
    await pacer.sleep_until(loop.time() - 1)
    assert ran == ["other"]
    other.cancel()
