"""One BACnet confirmed request with a deadline, its outcome mapped to ``drivers.errors``.

bacpypes3 resolves a request's future with the acknowledgement, or fails it with the
Error, Reject or Abort PDU itself (``ErrorRejectAbortNack`` derives from BaseException,
not Exception). An Abort with reason ``no-response`` is bacpypes3 giving up after its own
retries: the device did not answer, a transport fault like our deadline running out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from bacpypes3.apdu import AbortPDU, ErrorRejectAbortNack

from citytwin.drivers.errors import ConnectionClosed, DeviceError, DriverError, RequestTimeout

T = TypeVar("T")


class Requester:
    """Sends requests to one device and counts them, as the driver's health reports."""

    def __init__(self, peer: str, timeout: float) -> None:
        self.peer = peer
        self.timeout = timeout
        self.requests = 0
        self.failures = 0
        self.last_error: str | None = None

    async def __call__(self, request: Awaitable[T], what: str) -> T:
        """The request's outcome within the timeout.

        The request runs as a task of its own, awaited through a shield: our task cancelled
        (the gateway stopping, a device removed, a command's time up) ends at once and leaves
        the request to its answer or bacpypes3's own give-up. Cancelled with our task, its
        future would be forgotten by bacpypes3 only in a done-callback a loop step later, and
        an answer arriving in between fails in bacpypes3 ("error processing incoming PDU:
        InvalidStateError"). Our own timeout still cancels it.
        """
        self.requests += 1
        work = asyncio.ensure_future(request)
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(work)
        except TimeoutError:
            work.cancel()
            error: DriverError = RequestTimeout(f"no answer from {self.peer} within {self.timeout} s {what}")
        except AbortPDU as exc:
            if str(exc) == "no-response":
                error = RequestTimeout(f"no answer from {self.peer} {what}")
            else:
                error = DeviceError(f"{self.peer} aborted {what}: {exc}")
        except ErrorRejectAbortNack as exc:
            kind = "rejected" if "Reject" in type(exc).__name__ else "refused"
            error = DeviceError(f"{self.peer} {kind} {what}: {exc}")
        except OSError as exc:
            error = ConnectionClosed(f"cannot send to {self.peer} {what}: {exc.strerror or exc}")
        self.failures += 1
        self.last_error = str(error)
        raise error
