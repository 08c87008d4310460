"""One aiocoap client context per gateway process, shared by every CoAP device.

aiocoap keeps its per-peer state (message ids, the NSTART=1 backlog, duplicate detection,
observations) in the context; one context means one UDP socket and one such state per
device however many resources and drivers talk to it. The context is created on first
use and shut down when its last user releases it. It belongs to the event loop it was
created on: a user on another loop (tests run one loop per test) gets a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiocoap import Context

log = logging.getLogger("citytwin.drivers.coap")

_context: Any = None
_loop: asyncio.AbstractEventLoop | None = None
_users = 0
_lock: asyncio.Lock | None = None


def _current_lock() -> asyncio.Lock:
    global _lock, _context, _users, _loop
    loop = asyncio.get_running_loop()
    if _loop is not loop:  # a previous loop's context cannot serve this one: forget it
        _context, _users, _loop, _lock = None, 0, loop, asyncio.Lock()
    assert _lock is not None
    return _lock


async def acquire() -> Any:
    """The shared client context; every ``acquire`` needs one ``release``."""
    global _context, _users
    async with _current_lock():
        if _context is None:
            _context = await Context.create_client_context(loggername="citytwin.coap")
            log.debug("CoAP client context created")
        _users += 1
        return _context


async def release(context: Any) -> None:
    """Give the context back; the last user's release shuts it down."""
    global _context, _users
    async with _current_lock():
        if context is not _context:  # from a previous loop, already forgotten
            return
        _users -= 1
        if _users > 0:
            return
        _context = None
    await context.shutdown()
    log.debug("CoAP client context shut down")


def users() -> int:
    """How many drivers hold the shared context (for tests and health)."""
    return _users
