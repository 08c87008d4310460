"""What one command carries through the checks, and the reply and audit record it ends in.

Both are built by one function from the same facts, so the reply an operator reads and the
record the audit chain keeps cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from citytwin.gateway.commandrequests import KIND_LABEL

Respond = Callable[[dict[str, Any]], None]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Context:
    """One command on its way: where it came from, who sent it, what was checked."""

    kind: str  # invoke | set | desired | get
    device: str
    service: str | None
    payload: bytes
    user: str | None  # the identity the transport vouches for (MQTT 5 user property, HTTP auth)
    respond: Respond  # where the reply goes (the hub's response topic, an HTTP request)
    reply_to: str | None = None  # recorded with the id, for a reply after a restart
    authenticated: bool = False  # ``user`` was authenticated by the gateway itself (HTTP)
    correlation: bytes | None = None
    command_id: str | None = None
    operator: str | None = None
    target: str = ""
    checks: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def label(self) -> str:
        return self.service or KIND_LABEL[self.kind]


def outcome(ctx: Context, reply: dict[str, Any], audit_status: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The reply body, and the audit record (None for reads, which change nothing)."""
    body = {"id": ctx.command_id, **{k: v for k, v in reply.items() if k != "id"}, "ts": now_ms()}
    if ctx.kind == "get":
        return body, None
    record: dict[str, Any] = {
        "ts": body["ts"], "device": ctx.device, "id": ctx.command_id, "kind": ctx.kind,
        "target": ctx.target or ctx.service or ctx.kind, "operator": ctx.operator,
        "checks": ctx.checks, "status": audit_status or reply["status"],
    }
    if "error" in reply:
        record["error"] = reply["error"]
    if reply.get("output"):
        record["output"] = reply["output"]
    return body, record


def rejection(code: str, message: str, output: dict[str, Any] | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"status": "rejected", "error": {"code": code, "message": message}}
    if output is not None:
        reply["output"] = output
    return reply
