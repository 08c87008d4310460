"""``citytwin demo``: a whole street on one machine, nothing installed but the package.

An embedded MQTT broker (amqtt; it speaks MQTT 3.1.1 only, so the hub link runs in its 3.1.1
mode), four simulated field devices each speaking its own protocol — a pump station (Modbus
TCP), a signal controller (OPC UA), city sensors (CoAP) and water meters (MQTT, on the same
embedded broker as their southbound broker) — the gateway on the packaged example configs,
and a hub-side operator who watches the twins and sends one command per protocol.

The console tells the story; the gateway's own log lines go to a file the demo names (warnings
still show), so they do not interleave with it. Values are printed as the thing model
describes them: its unit, and as many decimals as its ``step``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import yaml

from citytwin.gateway.app import Gateway
from citytwin.gateway.bootstrap import prepare
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.simulators.city_sensors.server import CitySensorsSimulator
from citytwin.simulators.intersection.server import IntersectionSimulator
from citytwin.simulators.meters.server import MetersSimulator
from citytwin.simulators.pump_station.server import PumpStationSimulator

log = logging.getLogger("citytwin.demo")
OPERATOR = "demo-operator"
PUMPS = "pump-station-1"
SLOW_RTT_MS = 30.0  # above this a round trip has met Nagle's algorithm somewhere (docs/performance.md)
LOG_FILE = Path(tempfile.gettempdir()) / "citytwin-demo.log"


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[None]:
    """The gateway's log lines into ``path``; the console's handlers keep warnings and errors."""
    root = logging.getLogger()
    previous = [(handler, handler.level) for handler in root.handlers]
    for handler, _ in previous:
        handler.setLevel(max(handler.level, logging.WARNING))
    file = logging.FileHandler(path, mode="w", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(file)
    try:
        yield
    finally:
        root.removeHandler(file)
        file.close()
        for handler, level in previous:
            handler.setLevel(level)


class Units:
    """Values as the thing model describes them: ``21.3 °C``, ``2.08 m`` (the step's decimals)."""

    def __init__(self, specs: Mapping[str, DeviceSpec]) -> None:
        self.specs = specs

    def __call__(self, device: str, prop: str, value: Any) -> str:
        spec = self.specs.get(device)
        found = spec.model.properties.get(prop) if spec is not None else None
        if found is None or value is None:
            return "-" if value is None else str(value)
        dtype = found.data_type
        if isinstance(value, bool) or (dtype.names and isinstance(value, int)):
            name = dtype.names.get(int(value))
            if name:
                return name
            return str(value).lower()
        if isinstance(value, float) or isinstance(value, int):
            step = dtype.step
            decimals = 0 if step is None and isinstance(value, int) else _decimals(step)
            text = f"{value:.{decimals}f}"
        else:
            text = str(value)
        return f"{text} {dtype.unit}" if dtype.unit else text


def _decimals(step: float | None) -> int:
    """Decimals of a step (0.01 → 2, 1 → 0); with no step, 2."""
    if step is None:
        return 2
    if step <= 0 or step == int(step):
        return 0
    return min(6, max(0, -math.floor(math.log10(step) + 1e-9)))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def embedded_broker(port: int) -> Any:
    from amqtt.broker import Broker

    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await broker.start()
    try:
        yield broker
    finally:
        await broker.shutdown()


def _example(name: str) -> dict[str, Any]:
    text = resources.files("citytwin.gateway.examples").joinpath(name).read_text("utf-8")
    return dict(yaml.safe_load(text))


def demo_config(hub_url: str, protocol: str, ports: dict[str, int], data_dir: Path) -> str:
    """The packaged examples merged into one gateway, pointed at the demo's simulators."""
    doc = _example("pump-station.yaml")
    doc["gateway"]["data_dir"] = str(data_dir)
    doc["hub"].update({"url": hub_url, "protocol": protocol, "snapshot_interval": 10})
    # MQTT 3.1.1 carries no user properties: the operator names itself in the payload
    doc["access"]["identity"] = ["user_property", "payload"]
    doc["access"]["grants"].append({"operators": [OPERATOR], "role": "operator"})
    doc["http"] = {"enabled": False}
    pumps = doc["devices"][0]
    pumps["connection"]["port"] = ports["modbus"]
    pumps["poll_period"] = 0.5
    for name, fix in (("intersection.yaml", _opcua), ("city-sensors.yaml", _coap), ("meters.yaml", _mqtt)):
        for device in _example(name)["devices"]:
            fix(device, ports, hub_url)
            doc["devices"].append(device)
    return yaml.safe_dump(doc, sort_keys=False)


def _opcua(device: dict[str, Any], ports: dict[str, int], hub_url: str) -> None:
    url = device["connection"]["url"]
    device["connection"]["url"] = url.replace(":4840/", f":{ports['opcua']}/")


def _coap(device: dict[str, Any], ports: dict[str, int], hub_url: str) -> None:
    device["connection"]["port"] = ports["coap"]


def _mqtt(device: dict[str, Any], ports: dict[str, int], hub_url: str) -> None:
    device["connection"].update({"url": hub_url, "protocol": "3.1.1"})


class Operator:
    """The hub side: watches the twins and sends commands, printing what a person would see."""

    def __init__(self, client: aiomqtt.Client, prefix: str, gateway_id: str, units: Units | None = None) -> None:
        self.client = client
        self.base = f"{prefix}/{gateway_id}"
        self.state: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, int] = {}
        self.points = 0
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.units = units or Units({})
        self.devices: list[str] = []  # every device of the gateway: each gets a twin line
        self.hinted = False
        # a plan the controller accepted: shown as pending from the reply on, before the next
        # poll reports pending_plan, so the twin line never contradicts the reply above it
        self.accepted_plan: int | None = None

    async def listen(self) -> None:
        async for message in self.client.messages:
            topic = str(message.topic)
            assert isinstance(message.payload, bytes)
            try:
                body = orjson.loads(message.payload)
            except orjson.JSONDecodeError:
                continue
            rel = topic[len(self.base) + 1 :]
            device = rel.split("/", 1)[0]
            if rel.endswith("properties/report"):
                self.reports[device] = self.reports.get(device, 0) + 1
                self.points += len(body["properties"])
                state = self.state.setdefault(device, {})
                for key, entry in body["properties"].items():
                    state[key] = entry["value"]
            elif rel.endswith("/replies"):
                future = self.pending.pop(body.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(body)
            elif rel == "status":
                print(f"hub   gateway {self.base.rsplit('/', 1)[1]} is {body['state']}", flush=True)
            elif rel.endswith("/status"):
                print(f"hub   device {device} is {body['state']}", flush=True)
            elif "/events/" in rel:
                print(f"hub   EVENT {device} {rel.split('/events/')[1]} ({body['type']}): {body['output']}", flush=True)

    def summary(self) -> list[str]:
        lines = [self._twin_line(device, self.state[device])
                 for device in self.devices or sorted(self.state) if self.state.get(device)]
        return lines or ["twin  (waiting for the first reports)"]

    def _twin_line(self, device: str, s: dict[str, Any]) -> str:
        def v(prop: str) -> str:
            return self.units(device, prop, s.get(prop))

        def pump(n: int) -> str:
            state = "FAULT" if s.get(f"pump{n}_fault") else ("run " if s.get(f"pump{n}_running") else "stop")
            return f"P{n} {state} {v(f'pump{n}_frequency')}"

        if device == PUMPS and "level" in s:
            detail = f"level {v('level')}  in {v('inflow')}  out {v('outflow')} | {pump(1)} | {pump(2)}"
        elif device == "intersection-1":
            plan = f"plan {s.get('plan')}"
            if self.accepted_plan == s.get("plan"):
                self.accepted_plan = None
            pending = s.get("pending_plan") or self.accepted_plan
            if pending:  # the controller switches plans at the end of its cycle
                plan += f" (plan {pending} from the end of this cycle)"
            detail = (f"{plan} phase {s.get('phase')} NS {v('signal_ns')} EW {v('signal_ew')} "
                      f"count N {v('count_north')}")
        else:
            spec = self.units.specs.get(device)
            order = [p for p in (spec.model.properties if spec is not None else ()) if p in s] or sorted(s)
            detail = "  ".join(f"{prop} {v(prop)}" for prop in order[:6])
        return f"twin  {device:<16} {detail}"

    async def invoke(self, device: str, service: str, inputs: dict[str, Any], command_id: str) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        print(f"hub → {device}: invoke {service} {orjson.dumps(inputs).decode()} (id {command_id})", flush=True)
        sent = time.perf_counter()
        await self.client.publish(
            f"{self.base}/{device}/services/{service}/invoke",
            orjson.dumps({"id": command_id, "input": inputs, "operator": OPERATOR}), qos=1,
        )
        reply = await asyncio.wait_for(future, 10)
        rtt = (time.perf_counter() - sent) * 1000
        detail = reply.get("error", {}).get("message") if "error" in reply else reply.get("output")
        print(f"hub ← {command_id} {reply['status']} in {rtt:.1f} ms: {detail}", flush=True)
        if service == "set_plan" and reply.get("status") == "succeeded":
            self.accepted_plan = int(inputs["plan"])
            print("      (a signal controller changes plans only at the end of its cycle: "
                  "until then the twin shows the new plan as pending)", flush=True)
        if rtt > SLOW_RTT_MS and not self.hinted:
            self.hinted = True
            print(f"hint  a round trip over {SLOW_RTT_MS:.0f} ms: a broker without TCP_NODELAY holds small "
                  "packets back (Nagle); for mosquitto put 'set_tcp_nodelay true' in its config", flush=True)
        reply["rtt_ms"] = rtt
        return reply


async def run_demo(duration: float | None, broker_url: str | None, log_file: Path = LOG_FILE) -> int:
    with logs_to_file(log_file):
        print(f"demo  the gateway's log lines go to {log_file} (warnings show here too)", flush=True)
        return await _run_demo(duration, broker_url)


async def _run_demo(duration: float | None, broker_url: str | None) -> int:
    async with contextlib.AsyncExitStack() as stack:
        if broker_url is None:
            port = free_port()
            await stack.enter_async_context(embedded_broker(port))
            broker_url, protocol = f"mqtt://127.0.0.1:{port}", "3.1.1"
            print(f"demo  embedded MQTT broker (amqtt, MQTT 3.1.1) on 127.0.0.1:{port}", flush=True)
        else:
            protocol = "5"
        ports = {"modbus": free_port(), "opcua": free_port(), "coap": free_port(socket.SOCK_DGRAM)}
        await stack.enter_async_context(PumpStationSimulator(port=ports["modbus"], seed=7))
        print(f"demo  pump station       Modbus TCP  127.0.0.1:{ports['modbus']}", flush=True)
        await stack.enter_async_context(IntersectionSimulator(port=ports["opcua"], seed=7))
        print(f"demo  signal controller  OPC UA      127.0.0.1:{ports['opcua']}", flush=True)
        await stack.enter_async_context(CitySensorsSimulator(port=ports["coap"], seed=7, interval=2.0))
        print(f"demo  city sensors       CoAP        127.0.0.1:{ports['coap']}", flush=True)
        await stack.enter_async_context(MetersSimulator(broker_url, count=2, seed=7, protocol=protocol))
        print(f"demo  water meters       MQTT        {broker_url} (topics meters/…)", flush=True)
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citytwin-demo-")))
        examples = Path(str(resources.files("citytwin.gateway.examples")))
        config, specs = prepare(demo_config(broker_url, protocol, ports, data_dir), "<demo>", examples)
        host, _, port_text = broker_url.removeprefix("mqtt://").rstrip("/").partition(":")
        client = aiomqtt.Client(
            host, int(port_text or 1883), identifier="citytwin-demo-operator",
            protocol=aiomqtt.ProtocolVersion.V311,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        await stack.enter_async_context(client)
        operator = Operator(client, config.hub.prefix, config.gateway.id, Units(specs))
        operator.devices = list(specs)
        await client.subscribe(f"{operator.base}/#", qos=1)
        listener = asyncio.create_task(operator.listen())
        stack.callback(listener.cancel)
        await stack.enter_async_context(Gateway(config, specs))
        print(f"demo  gateway {config.gateway.id} running with {len(specs)} devices; Ctrl-C to stop", flush=True)
        return await _story(operator, sorted(specs), duration)
    return 1


SCRIPT: list[tuple[float, str, str, dict[str, Any], str]] = [
    (3.0, PUMPS, "start_pump", {"pump": 1}, "succeeded"),
    (5.0, PUMPS, "set_frequency", {"pump": 1, "hz": 48.5}, "succeeded"),
    (6.5, PUMPS, "set_frequency", {"pump": 1, "hz": 70}, "rejected"),
    (8.0, "intersection-1", "set_plan", {"plan": 2}, "succeeded"),
    (9.5, "air-quality-1", "calibrate", {}, "succeeded"),
    (11.0, "meter-1", "set_valve", {"open": False}, "succeeded"),
]


async def _story(operator: Operator, devices: list[str], duration: float | None) -> int:
    loop = asyncio.get_running_loop()
    end = loop.time() + duration if duration else None
    script = list(SCRIPT)
    replies: list[dict[str, Any]] = []
    as_expected = True
    start = loop.time()
    next_print = start + 2.0
    while end is None or loop.time() < end:
        if script and loop.time() - start >= script[0][0]:
            _, device, service, inputs, expected = script.pop(0)
            try:
                reply = await operator.invoke(device, service, inputs, f"demo-{len(replies) + 1}")
            except TimeoutError:
                print(f"hub ← no reply to {service} within 10 s", flush=True)
                reply = {"status": "timeout"}
            replies.append(reply)
            as_expected &= reply["status"] == expected
        if loop.time() >= next_print:
            for line in operator.summary():
                print(line, flush=True)
            next_print += 2.0
        await asyncio.sleep(0.1)
    elapsed = loop.time() - start
    rtts = [r["rtt_ms"] for r in replies if "rtt_ms" in r]
    silent = [d for d in devices if not operator.reports.get(d)]
    print(
        f"demo  {sum(operator.reports.values())} reports from {len(devices) - len(silent)} of {len(devices)} devices, "
        f"{operator.points} property updates in {elapsed:.0f} s; {len(replies)} commands"
        + (f", round trip {min(rtts):.1f}–{max(rtts):.1f} ms" if rtts else ""),
        flush=True,
    )
    ok = not silent and not script and as_expected
    if ok:
        print("demo  OK: every device reached the hub and every command was answered as expected", flush=True)
    else:
        why = []
        if silent:
            why.append("no telemetry from " + ", ".join(silent))
        if script or not as_expected:
            why.append("commands not answered as expected" + (" (run longer than 12 s)" if script else ""))
        print("demo  FAILED: " + "; ".join(why), flush=True)
    return 0 if ok else 1
