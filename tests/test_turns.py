"""Poll results take turns on the event loop (issue 13: commands stay fast under any load): one
result's pipeline per loop iteration, so that the loop reads its sockets (a command arriving,
a command-log commit coming back) between them instead of after a whole batch."""

from __future__ import annotations

import asyncio

from citytwin.gateway.turns import Turns


async def test_results_waiting_together_go_one_per_loop_iteration_in_order() -> None:
    turns = Turns()
    order: list[tuple[int, str]] = []  # (loop iteration, what ran)
    iteration = 0
    ticking = True

    def tick() -> None:  # counts loop iterations: each run is one
        nonlocal iteration
        iteration += 1
        if ticking:
            asyncio.get_running_loop().call_soon(tick)

    async def result(n: int) -> None:
        await turns.take()
        order.append((iteration, f"poll {n}"))

    asyncio.get_running_loop().call_soon(tick)
    tasks = [asyncio.create_task(result(n)) for n in range(8)]  # a batch of answers arrived together
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_soon(lambda: order.append((iteration, "command read")))
    await asyncio.gather(*tasks)
    ticking = False
    polls = [(i, what) for i, what in order if what.startswith("poll")]
    assert [what for _, what in polls] == [f"poll {n}" for n in range(8)]  # first come, first served
    assert len({i for i, _ in polls}) == 8  # never two in one iteration
    command = next(i for i, what in order if what == "command read")
    assert command < polls[-1][0]  # the command was not kept waiting behind the whole batch


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    turns = Turns()
    done: list[int] = []

    async def result(n: int) -> None:
        await turns.take()
        done.append(n)

    tasks = [asyncio.create_task(result(n)) for n in range(3)]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert done == [1, 2] and tasks[0].cancelled()
    await asyncio.wait_for(turns.take(), 1.0)  # and the turns still flow afterwards
