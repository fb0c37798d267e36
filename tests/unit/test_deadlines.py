"""Many deadlines on one loop timer: each item expires at its own time, in order; a discarded
one never does; a deadline earlier than the armed one re-arms the timer."""

from __future__ import annotations

import asyncio

from gateway.base.deadlines import Deadlines


class Item:
    def __init__(self, name: str, log: list[tuple[str, float]], loop: asyncio.AbstractEventLoop):
        self.name = name
        self._log = log
        self._loop = loop

    def expire(self) -> None:
        self._log.append((self.name, self._loop.time()))


def test_each_deadline_fires_at_its_time_in_order() -> None:
    async def scenario() -> tuple[list[tuple[str, float]], float, int]:
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float]] = []
        deadlines = Deadlines(loop)
        start = loop.time()
        late, gone, early, middle = (Item(n, log, loop) for n in ("late", "gone", "early", "mid"))
        deadlines.add(late, 0.30)
        deadlines.add(gone, 0.05)
        deadlines.add(early, 0.10)  # after a later one: the timer is re-armed for it
        deadlines.add(middle, 0.20)
        deadlines.discard(gone)
        await asyncio.sleep(0.5)
        left = len(deadlines)
        deadlines.close()
        return log, start, left

    log, start, left = asyncio.run(scenario())
    assert [name for name, _ in log] == ["early", "mid", "late"]
    for (_, at), due in zip(log, (0.10, 0.20, 0.30), strict=True):
        assert due - 0.002 <= at - start < due + 0.08
    assert left == 0


def test_close_cancels_what_is_pending() -> None:
    async def scenario() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float]] = []
        deadlines = Deadlines(loop)
        deadlines.add(Item("never", log, loop), 0.05)
        deadlines.close()
        await asyncio.sleep(0.15)
        return log

    assert asyncio.run(scenario()) == []
