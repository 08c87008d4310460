"""``citytwin demo``: the whole pump-station story on one machine, nothing else installed.

An embedded MQTT broker (amqtt, MQTT 3.1.1, so the hub link runs in its 3.1.1 mode), the
pump-station simulator, the gateway on the packaged example config, and a hub-side operator
who watches the twin and after a few seconds starts a pump and sets its frequency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import yaml

from citytwin.gateway.app import Gateway
from citytwin.gateway.bootstrap import prepare
from citytwin.simulators.pump_station.server import PumpStationSimulator

log = logging.getLogger("citytwin.demo")
DEVICE = "pump-station-1"
OPERATOR = "demo-operator"


def free_port() -> int:
    with socket.socket() as s:
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


def demo_config(hub_url: str, protocol: str, sim_port: int, data_dir: Path) -> str:
    text = resources.files("citytwin.gateway.examples").joinpath("pump-station.yaml").read_text("utf-8")
    doc = yaml.safe_load(text)
    doc["gateway"]["data_dir"] = str(data_dir)
    doc["hub"].update({"url": hub_url, "protocol": protocol, "snapshot_interval": 10})
    # MQTT 3.1.1 carries no user properties: the operator names itself in the payload
    doc["access"]["identity"] = ["user_property", "payload"]
    doc["access"]["grants"].append({"operators": [OPERATOR], "role": "operator"})
    doc.setdefault("http", {})["enabled"] = False
    device = doc["devices"][0]
    device["connection"]["port"] = sim_port
    device["poll_period"] = 0.5
    return yaml.safe_dump(doc, sort_keys=False)


class Operator:
    """The hub side: watches the twin and sends commands, printing what a person would see."""

    def __init__(self, client: aiomqtt.Client, prefix: str, gateway_id: str) -> None:
        self.client = client
        self.base = f"{prefix}/{gateway_id}"
        self.state: dict[str, Any] = {}
        self.reports = 0
        self.points = 0
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.started = time.monotonic()

    async def listen(self) -> None:
        async for message in self.client.messages:
            topic = str(message.topic)
            assert isinstance(message.payload, bytes)
            body = orjson.loads(message.payload)
            rel = topic[len(self.base) + 1 :]
            if rel.endswith("properties/report"):
                self.reports += 1
                self.points += len(body["properties"])
                for key, entry in body["properties"].items():
                    self.state[key] = entry["value"]
            elif rel.endswith("/replies"):
                future = self.pending.pop(body.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(body)
            elif rel == "status":
                print(f"hub   gateway {self.base.rsplit('/', 1)[1]} is {body['state']}", flush=True)
            elif rel.endswith("/status"):
                print(f"hub   device {rel.removesuffix('/status')} is {body['state']}", flush=True)
            elif "/events/" in rel:
                print(f"hub   EVENT {rel.split('/events/')[1]} ({body['type']}): {body['output']}", flush=True)

    def summary(self) -> str:
        s = self.state
        if "level" not in s:
            return "twin  (waiting for the first report)"

        def pump(n: int) -> str:
            state = "FAULT" if s.get(f"pump{n}_fault") else ("run " if s.get(f"pump{n}_running") else "stop")
            return f"P{n} {state} {s.get(f'pump{n}_frequency', 0):5.2f} Hz {s.get(f'pump{n}_current', 0):5.1f} A"

        return (
            f"twin  level {s['level']:.3f} m  in {s.get('inflow', 0):6.1f} m³/h  "
            f"out {s.get('outflow', 0):6.1f} m³/h  {s.get('outlet_pressure', 0):6.1f} kPa  | "
            f"{pump(1)} | {pump(2)}"
        )

    async def invoke(self, service: str, inputs: dict[str, Any], command_id: str) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        print(f"hub → invoke {service} {orjson.dumps(inputs).decode()} (id {command_id})", flush=True)
        sent = time.perf_counter()
        await self.client.publish(
            f"{self.base}/{DEVICE}/services/{service}/invoke",
            orjson.dumps({"id": command_id, "input": inputs, "operator": OPERATOR}), qos=1,
        )
        reply = await asyncio.wait_for(future, 10)
        rtt = (time.perf_counter() - sent) * 1000
        detail = reply.get("error", {}).get("message") if "error" in reply else reply.get("output")
        print(f"hub ← {command_id} {reply['status']} in {rtt:.1f} ms: {detail}", flush=True)
        reply["rtt_ms"] = rtt
        return reply


async def run_demo(duration: float | None, broker_url: str | None) -> int:
    async with contextlib.AsyncExitStack() as stack:
        if broker_url is None:
            port = free_port()
            await stack.enter_async_context(embedded_broker(port))
            broker_url, protocol = f"mqtt://127.0.0.1:{port}", "3.1.1"
            print(f"demo  embedded MQTT broker (amqtt, MQTT 3.1.1) on 127.0.0.1:{port}", flush=True)
        else:
            protocol = "5"
        sim_port = free_port()
        sim = PumpStationSimulator(port=sim_port, speed=1.0, seed=7)
        await stack.enter_async_context(sim)
        print(f"demo  pump-station simulator (Modbus TCP) on 127.0.0.1:{sim_port}", flush=True)
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citytwin-demo-")))
        config, specs = prepare(demo_config(broker_url, protocol, sim_port, data_dir), "<demo>", data_dir)
        host, _, port_text = broker_url.removeprefix("mqtt://").rstrip("/").partition(":")
        client = aiomqtt.Client(
            host, int(port_text or 1883), identifier="citytwin-demo-operator",
            protocol=aiomqtt.ProtocolVersion.V311,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        await stack.enter_async_context(client)
        operator = Operator(client, config.hub.prefix, config.gateway.id)
        await client.subscribe(f"{operator.base}/#", qos=1)
        listener = asyncio.create_task(operator.listen())
        stack.callback(listener.cancel)
        await stack.enter_async_context(Gateway(config, specs))
        print(f"demo  gateway {config.gateway.id} running; Ctrl-C to stop", flush=True)
        return await _story(operator, duration)
    return 1


async def _story(operator: Operator, duration: float | None) -> int:
    loop = asyncio.get_running_loop()
    end = loop.time() + duration if duration else None
    replies: list[dict[str, Any]] = []
    script: list[tuple[float, str, dict[str, Any], str]] = [
        (3.0, "start_pump", {"pump": 1}, "succeeded"),
        (6.0, "set_frequency", {"pump": 1, "hz": 48.5}, "succeeded"),
        (8.0, "set_frequency", {"pump": 1, "hz": 70}, "rejected"),
    ]
    expected_ok = True
    start = loop.time()
    next_print = start + 1.0
    while end is None or loop.time() < end:
        if script and loop.time() - start >= script[0][0]:
            _, service, inputs, expected = script.pop(0)
            try:
                reply = await operator.invoke(service, inputs, f"demo-{len(replies) + 1}")
            except TimeoutError:
                print(f"hub ← no reply to {service} within 10 s", flush=True)
                reply = {"status": "timeout"}
            replies.append(reply)
            expected_ok &= reply["status"] == expected
        if loop.time() >= next_print:
            print(operator.summary(), flush=True)
            next_print += 1.0
        await asyncio.sleep(0.1)
    elapsed = loop.time() - start
    rtts = [r["rtt_ms"] for r in replies if "rtt_ms" in r]
    print(
        f"demo  {operator.reports} reports, {operator.points} property updates in {elapsed:.0f} s; "
        f"{len(replies)} commands" + (f", round trip {min(rtts):.1f}–{max(rtts):.1f} ms" if rtts else ""),
        flush=True,
    )
    ok = operator.reports > 0 and not script and expected_ok
    print("demo  OK: telemetry reached the hub and the commands were answered as expected" if ok
          else "demo  FAILED: " + ("no telemetry" if not operator.reports else "commands not answered as expected"),
          flush=True)
    return 0 if ok else 1
