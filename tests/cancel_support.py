"""Cancelling a driver's read while its request is in flight, at varied moments.

A device task is cancelled when the gateway stops or a device is removed, whatever its driver
is doing. Python 3.11's ``asyncio.wait_for`` loses that cancellation when the awaited answer
completes in the same step (CPython gh-86296): the read then returns normally, and the task
keeps polling. The proxies here stand between a driver and its real peer and hold the peer's
answers, so a test knows the request is on the wire and can choose when the answer arrives
relative to ``cancel()``: well after it, or a few event-loop steps either side of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from citytwin.drivers.base import Driver
from citytwin.drivers.errors import TransportError

T = TypeVar("T")
CANCEL_BOUND = 1.0  # seconds a cancelled read may take to end
IN_FLIGHT_BOUND = 5.0  # generous: only matters when the test fails


class HoldingProxy:
    """A TCP proxy: forwards requests to the peer; holds its answers while ``hold`` is set."""

    def __init__(self, target: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target)
        self.port = 0
        self.hold = False
        self.held: list[bytes] = []
        self.holding = asyncio.Event()  # an answer is held: the request was on the wire
        self.client_gone = asyncio.Event()  # the driver closed its side of a connection
        self._to_client: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._to_client = writer
        self._writers += [writer, up_writer]
        task = asyncio.create_task(self._answers(up_reader, writer))
        self._tasks.add(task)
        try:
            while data := await reader.read(65536):
                up_writer.write(data)
        except ConnectionError:
            pass
        finally:
            self.client_gone.set()
            up_writer.close()
            writer.close()

    async def _answers(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await up_reader.read(65536):
                if self.hold:
                    self.held.append(data)
                    self.holding.set()
                else:
                    writer.write(data)

    def release(self) -> None:
        """Pass the held answers on (to the newest connection) and hold no more."""
        self.hold = False
        data, self.held = b"".join(self.held), []
        if data and self._to_client is not None and not self._to_client.is_closing():
            self._to_client.write(data)


class HoldingUdpProxy:
    """The same for UDP, for one client: it sends to ``port``, and answers come back from it."""

    def __init__(self, target: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target)
        self.port = 0
        self.hold = False
        self.held: list[bytes] = []
        self.holding = asyncio.Event()
        self._client: Any = None
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> HoldingUdpProxy:
        loop = asyncio.get_running_loop()
        proxy = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                proxy._client = addr
                if proxy._back is not None:
                    proxy._back.sendto(data, proxy.target)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if proxy.hold:
                    proxy.held.append(data)
                    proxy.holding.set()
                else:
                    proxy._to_client(data)

        self._front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self._back, _ = await loop.create_datagram_endpoint(Back, local_addr=("127.0.0.1", 0))
        self.port = self._front.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for transport in (self._front, self._back):
            if transport is not None:
                transport.close()

    def _to_client(self, data: bytes) -> None:
        if self._front is not None and self._client is not None:
            self._front.sendto(data, self._client)

    def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for data in held:
            self._to_client(data)


Proxy = HoldingProxy | HoldingUdpProxy


async def _ends(task: asyncio.Task[Any], what: str) -> None:
    done, _ = await asyncio.wait({task}, timeout=CANCEL_BOUND)
    assert done, f"{what}: the cancelled read still runs {CANCEL_BOUND} s after cancel()"


async def read_again(driver: Driver, request: Callable[[], Awaitable[T]]) -> T:
    """The runner's next request: as it is, or after a transport error re-connected first."""
    async with asyncio.timeout(IN_FLIGHT_BOUND * 2):
        try:
            return await request()
        except TransportError:
            await driver.close()
            await driver.connect()
            return await request()


async def cancel_reads_in_flight(
    driver: Driver,
    proxy: Proxy,
    check: Callable[[T], None],
    rounds: int = 20,
    request: Callable[[], Awaitable[T]] | None = None,
) -> dict[str, int]:
    """Cancel ``rounds`` reads (or other ``request``s) while their answers are held, each at
    another moment.

    Even rounds cancel while the answer is held and release it afterwards (the answer comes
    late); odd rounds release the answer and cancel 0, 1, 2… loop steps later, across the
    moment the answer reaches the driver. Each cancelled read must raise CancelledError (a
    read that had already finished may return), end within ``CANCEL_BOUND``, and the next
    read must give answers ``check`` accepts. Returns how the rounds went.
    """
    outcome = {"cancelled": 0, "finished_first": 0}
    poll: Callable[[], Awaitable[Any]] = request or driver.read
    for n in range(rounds):
        proxy.holding.clear()
        proxy.hold = True
        task = asyncio.ensure_future(poll())
        holding = asyncio.ensure_future(proxy.holding.wait())
        done, _ = await asyncio.wait({task, holding}, timeout=IN_FLIGHT_BOUND,
                                     return_when=asyncio.FIRST_COMPLETED)
        holding.cancel()
        assert task not in done, f"round {n}: the read ended before its answer came: {task.result()}"
        assert proxy.holding.is_set(), f"round {n}: no answer within {IN_FLIGHT_BOUND} s"
        if n % 2 == 0:
            accepted = task.cancel()
            proxy.release()
        else:
            proxy.release()
            for _ in range(n // 2):
                await asyncio.sleep(0)  # a loop step: moves cancel() across the answer's arrival
            accepted = task.cancel()
        await _ends(task, f"round {n}")
        if accepted:
            assert task.cancelled(), (
                f"round {n}: cancel() was accepted but the read ended with "
                f"{task.exception() or task.result()!r}"
            )
            outcome["cancelled"] += 1
        else:
            outcome["finished_first"] += 1
        check(await read_again(driver, poll))
    return outcome
