"""The intersection served over OPC UA (asyncua server), its controller ticking alongside.

The node map is in ``nodes.md``. Methods check their input arguments' types as Part 4 asks
(BadTypeMismatch for an argument of another built-in type, BadArgumentsMissing /
BadTooManyArguments for a wrong count), so a client that sends an Int64 where Int32 is
declared is refused, as a strict server (node-opcua) refuses it.

With ``pki_dir`` the server also offers Basic256Sha256 Sign and SignAndEncrypt, with its
own self-signed certificate made in that directory on first start.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography.x509.oid import ExtendedKeyUsageOID

from citytwin.simulators.intersection.controller import (
    APPROACHES,
    Controller,
    ControllerError,
    OutOfRange,
)
from citytwin.simulators.lifecycle import MAX_TICK_S, Simulator

log = logging.getLogger(__name__)

NAMESPACE = "urn:citytwin:sim:intersection"
APPLICATION_URI = "urn:citytwin:sim:intersection:server"
VT = ua.VariantType

# variable browse name -> (Variant type, writable); NodeIds are ns=<NAMESPACE>;s=<name>
CONTROLLER_VARIABLES: dict[str, tuple[ua.VariantType, bool]] = {
    "Controller.Mode": (VT.Int32, False),
    "Controller.Plan": (VT.Int32, False),
    "Controller.PendingPlan": (VT.Int32, False),
    "Controller.Phase": (VT.Int32, False),
    "Controller.Stage": (VT.Int32, False),
    "Controller.PhaseRemaining": (VT.Double, False),
    "Controller.CycleCount": (VT.UInt32, False),
    "Controller.SignalNS": (VT.Int32, False),
    "Controller.SignalEW": (VT.Int32, False),
    "Controller.Fault": (VT.Boolean, False),
    "Controller.FaultCode": (VT.Int32, False),
    "Controller.GreenExtension": (VT.Int32, True),
}
MAX_GREEN_EXTENSION = 30

Method = Callable[..., Awaitable[ua.CallMethodResult]]


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _checked(
    func: Callable[..., Awaitable[list[ua.Variant]]], types: Sequence[ua.VariantType]
) -> Method:
    """A method callback that refuses arguments of the wrong count or built-in type."""

    async def call(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        result = ua.CallMethodResult()
        if len(args) != len(types):
            code = StatusCodes.BadArgumentsMissing if len(args) < len(types) else StatusCodes.BadTooManyArguments
            result.StatusCode = _status(code)
            return result
        statuses = [
            ua.StatusCode() if arg.VariantType == expected else _status(StatusCodes.BadTypeMismatch)
            for arg, expected in zip(args, types, strict=True)
        ]
        if any(not s.is_good() for s in statuses):
            result.StatusCode = _status(StatusCodes.BadInvalidArgument)
            result.InputArgumentResults = statuses
            return result
        try:
            result.OutputArguments = await func(*(arg.Value for arg in args))
        except ControllerError as exc:
            log.info("method refused: %s", exc)
            bad = StatusCodes.BadOutOfRange if isinstance(exc, OutOfRange) else StatusCodes.BadInvalidState
            result.StatusCode = _status(bad)
        result.InputArgumentResults = statuses
        return result

    return call


class _Users(UserManager):
    """Anonymous users, and the configured name/password pairs."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = users

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is None or self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class IntersectionSimulator(Simulator):
    """Start/stop-able simulator; ``controller`` is the live state for in-process inspection.

    ``port=0`` binds a free port; ``port`` then holds the bound one and a restart reuses it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        *,
        tick: float = 0.1,
        speed: float = 1.0,
        seed: int | None = None,
        pki_dir: Path | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        if tick <= 0.0 or speed <= 0.0:
            raise ValueError("tick and speed must be positive")
        self.host = host
        self.port = port
        self.tick = tick
        self.speed = speed
        self.pki_dir = pki_dir
        self.users = dict(users or {})
        self.controller = Controller(seed=seed)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []  # method calls served, for tests
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._last: dict[str, Any] = {}
        self._fault_events: Any = None
        self.ns = 0

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/citytwin/intersection"

    @property
    def certificate(self) -> Path | None:
        return self.pki_dir / "own" / "cert.der" if self.pki_dir else None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = Server(user_manager=_Users(self.users))
        await server.init()
        server.set_server_name("citytwin intersection simulator")
        await server.set_application_uri(APPLICATION_URI)
        policies = [ua.SecurityPolicyType.NoSecurity]
        tokens: list[type] = [ua.AnonymousIdentityToken]
        if self.users:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)
        if self.pki_dir is not None:
            await self._load_certificate(server, self.pki_dir)
            policies += [ua.SecurityPolicyType.Basic256Sha256_Sign, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        server.set_security_policy(policies)
        server.set_endpoint(self.url)
        self.ns = await server.register_namespace(NAMESPACE)
        await self._build(server)
        try:
            await server.start()
        except OSError as exc:
            raise OSError(f"intersection simulator cannot listen on {self.host}:{self.port}: {exc}") from exc
        if server.bserver is not None and self.port == 0:
            self.port = server.bserver.port
            server.set_endpoint(self.url)  # advertise the bound port in the endpoints
            for endpoint in await server.get_endpoints():
                endpoint.EndpointUrl = self.url
        self._server = server
        await self._publish(force=True)
        self._ticker = asyncio.create_task(self._run(), name="intersection-controller")

    async def stop(self) -> None:
        server, self._server = self._server, None
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.wait([ticker])
        if server is not None:
            await server.stop()
        self._last.clear()

    # -- address space ----------------------------------------------------------------

    async def _load_certificate(self, server: Server, pki: Path) -> None:
        own = pki / "own"
        own.mkdir(parents=True, exist_ok=True)
        key, cert = own / "key.pem", own / "cert.der"
        await cert_gen.setup_self_signed_certificate(
            key, cert, APPLICATION_URI, socket.gethostname(),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"organizationName": "citytwin intersection simulator"},
        )
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))

    def _nodeid(self, name: str) -> ua.NodeId:
        return ua.NodeId(ua.String(name), ua.Int16(self.ns), ua.NodeIdType.String)

    async def _build(self, server: Server) -> None:
        ns = self.ns
        site = await server.nodes.objects.add_object(self._nodeid("Intersection"), ua.QualifiedName("Intersection", ns))
        controller = await site.add_object(self._nodeid("Controller"), ua.QualifiedName("Controller", ns))
        detectors = await site.add_object(self._nodeid("Detectors"), ua.QualifiedName("Detectors", ns))
        for name, (vtype, writable) in CONTROLLER_VARIABLES.items():
            await self._variable(controller, name, vtype, writable)
        for approach in APPROACHES:
            title = approach.title()
            await self._variable(detectors, f"Detector.{title}.Count", VT.UInt32, False)
            await self._variable(detectors, f"Detector.{title}.Occupancy", VT.Double, False)
        arg = ua.VariantType.Int32
        await self._method(controller, "SetPlan", self._set_plan, [("plan", arg)], [("activePlan", arg)])
        await self._method(controller, "SetMode", self._set_mode, [("mode", arg)], [("mode", arg)])
        await self._method(controller, "AdvancePhase", self._advance, [], [])
        await self._method(controller, "ClearFaults", self._clear_faults, [], [])
        fault_type = await server.create_custom_event_type(
            ns, "SignalFaultEventType", ObjectIds.SystemEventType,
            [("FaultCode", ua.VariantType.Int32)],
        )
        await controller.write_attribute(
            AttributeIds.EventNotifier, ua.DataValue(ua.Variant(1, ua.VariantType.Byte))
        )
        self._fault_events = await server.get_event_generator(fault_type, controller.nodeid)

    async def _variable(self, parent: Node, name: str, vtype: ua.VariantType, writable: bool) -> None:
        nodeid = self._nodeid(name)
        initial = {VT.Boolean: False, VT.Double: 0.0}.get(vtype, 0)
        node = await parent.add_variable(nodeid, ua.QualifiedName(name, self.ns), ua.Variant(initial, vtype))
        if writable:
            await node.set_writable()
        self._nodes[name] = nodeid

    async def _method(
        self, parent: Node, name: str, func: Callable[..., Awaitable[list[ua.Variant]]],
        inputs: list[tuple[str, ua.VariantType]], outputs: list[tuple[str, ua.VariantType]],
    ) -> None:
        def argument(arg_name: str, vtype: ua.VariantType) -> ua.Argument:
            arg = ua.Argument()
            arg.Name = arg_name
            arg.DataType = ua.NodeId(ua.Int32(vtype.value))
            arg.ValueRank = -1
            return arg

        await parent.add_method(
            self._nodeid(f"Controller.{name}"), ua.QualifiedName(name, self.ns),
            _checked(func, [t for _, t in inputs]),
            [argument(n, t) for n, t in inputs], [argument(n, t) for n, t in outputs],
        )

    # -- methods ----------------------------------------------------------------------

    async def _set_plan(self, plan: int) -> list[ua.Variant]:
        self.calls.append(("SetPlan", (plan,)))
        active = self.controller.set_plan(plan)
        await self._publish()
        return [ua.Variant(active, VT.Int32)]

    async def _set_mode(self, mode: int) -> list[ua.Variant]:
        self.calls.append(("SetMode", (mode,)))
        new = self.controller.set_mode(mode)
        await self._publish()
        return [ua.Variant(int(new), VT.Int32)]

    async def _advance(self) -> list[ua.Variant]:
        self.calls.append(("AdvancePhase", ()))
        self.controller.advance()
        await self._publish()
        return []

    async def _clear_faults(self) -> list[ua.Variant]:
        self.calls.append(("ClearFaults", ()))
        self.controller.clear_faults()
        await self._publish()
        return []

    # -- time -------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            self._take_writes()
            self.controller.step(min(now - last, MAX_TICK_S) * self.speed)
            last = now
            await self._publish()
            await self._report_faults()

    def _take_writes(self) -> None:
        server = self._server
        if server is None:
            return
        value = server.read_attribute_value(self._nodes["Controller.GreenExtension"]).Value
        extension = value.Value if value is not None else 0
        if isinstance(extension, int) and extension != self.controller.green_extension:
            self.controller.green_extension = max(0, min(MAX_GREEN_EXTENSION, extension))
            self._last.pop("Controller.GreenExtension", None)  # publish the clamped value

    def values(self) -> dict[str, Any]:
        """Every served variable's current value, by browse name."""
        c = self.controller
        out: dict[str, Any] = {
            "Controller.Mode": int(c.mode),
            "Controller.Plan": c.plan,
            "Controller.PendingPlan": c.pending_plan or 0,
            "Controller.Phase": c.phase + 1,
            "Controller.Stage": int(c.stage),
            "Controller.PhaseRemaining": round(c.remaining, 1),
            "Controller.CycleCount": c.cycles,
            "Controller.SignalNS": int(c.signal("north")),
            "Controller.SignalEW": int(c.signal("east")),
            "Controller.Fault": c.fault_code != 0,
            "Controller.FaultCode": c.fault_code,
            "Controller.GreenExtension": c.green_extension,
        }
        for approach, detector in c.detectors.items():
            out[f"Detector.{approach.title()}.Count"] = detector.count
            out[f"Detector.{approach.title()}.Occupancy"] = detector.occupancy
        return out

    def _vtype(self, name: str) -> ua.VariantType:
        if name in CONTROLLER_VARIABLES:
            return CONTROLLER_VARIABLES[name][0]
        return VT.UInt32 if name.endswith("Count") else VT.Double

    async def _publish(self, force: bool = False) -> None:
        server = self._server
        if server is None:
            return
        stamp = cast(ua.DateTime, datetime.now(UTC))
        for name, value in self.values().items():
            if not force and self._last.get(name) == value:
                continue
            self._last[name] = value
            data = ua.DataValue(ua.Variant(value, self._vtype(name)), SourceTimestamp=stamp, ServerTimestamp=stamp)
            await server.write_attribute_value(self._nodes[name], data)

    async def _report_faults(self) -> None:
        while self.controller.faults and self._fault_events is not None:
            code = self.controller.faults.pop(0)
            self._fault_events.event.FaultCode = ua.Variant(code, VT.Int32)
            self._fault_events.event.Severity = 800
            await self._fault_events.trigger(message=f"signal fault {code}")

    # -- faults for tests -------------------------------------------------------------

    def inject_fault(self, code: int) -> None:
        self.controller.inject_fault(code)

    async def stall_subscriptions(self) -> int:
        """Fault injection: stop every subscription's publishing (no data, no keep-alive)
        while sessions keep answering — the 'silently stopped' subscription. Returns how many."""
        server = self._server
        if server is None:
            return 0
        subs = list(server.iserver.subscription_service.subscriptions.values())
        for sub in subs:
            await sub.stop()
        return len(subs)


async def serve(
    host: str = "127.0.0.1",
    port: int = 4840,
    *,
    speed: float = 1.0,
    seed: int | None = None,
    pki_dir: Path | None = None,
    ready: Callable[[IntersectionSimulator], None] | None = None,
) -> None:
    """Run the simulator until cancelled (``citytwin sim intersection``)."""
    simulator = IntersectionSimulator(host, port, speed=speed, seed=seed, pki_dir=pki_dir)
    async with simulator:
        log.info("intersection simulator on %s", simulator.url)
        if ready is not None:
            ready(simulator)
        await asyncio.Event().wait()
