"""Water meters publishing JSON on their own MQTT topics and answering valve commands.

Topics and payloads are documented in topics.md. Each meter publishes telemetry (epoch-ms
timestamp) every ``report_interval`` seconds and status (ISO 8601 timestamp) on start, on
every change and every ``status_every`` telemetry messages; it answers commands on its
``cmd`` topic with a reply that carries the command's correlation id, to the MQTT 5
response topic when the command names one, else to its ``reply`` topic. The broker link
reconnects on its own, as a field device's modem would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import socket
import time
from typing import Any

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citytwin.simulators.lifecycle import Simulator
from citytwin.simulators.meters.meter import WaterMeter

log = logging.getLogger(__name__)

_URL = re.compile(r"^mqtt://(?P<host>[^/:]+)(:(?P<port>\d{1,5}))?/?$")


def meter_ids(count: int) -> list[str]:
    return [f"wm-{index:04d}" for index in range(1, count + 1)]


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


class MetersSimulator(Simulator):
    """``count`` meters under ``prefix`` on the broker at ``broker_url``.

    ``speed`` multiplies simulated time (a faster day); ``meters`` holds the live state for
    in-process inspection and fault injection (``meters["wm-0001"].leaking = True``).
    """

    def __init__(
        self,
        broker_url: str,
        count: int = 3,
        prefix: str = "meters",
        report_interval: int = 1,
        status_every: int = 10,
        speed: float = 1.0,
        seed: int | None = None,
        reconnect_delay: float = 0.5,
        protocol: str = "5",
    ) -> None:
        match = _URL.match(broker_url)
        if match is None:
            raise ValueError(f"broker url {broker_url!r} must look like mqtt://HOST:PORT")
        if count < 1:
            raise ValueError("count must be at least 1")
        self.host = match["host"]
        self.port = int(match["port"] or 1883)
        self.prefix = prefix
        self.status_every = status_every
        self.speed = speed
        self.reconnect_delay = reconnect_delay
        # "3.1.1" for brokers without MQTT 5: replies then carry the correlation id in the payload only
        self.protocol = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
        self.meters = {
            mid: WaterMeter(mid, None if seed is None else seed + i, report_interval=report_interval)
            for i, mid in enumerate(meter_ids(count))
        }
        self.commands = 0
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def topic(self, meter_id: str, kind: str) -> str:
        return f"{self.prefix}/{meter_id}/{kind}"

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("simulator already started")
        self._task = asyncio.create_task(self._run(), name="meters-simulator")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        while True:
            try:
                client = aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=f"meters-sim-{self.prefix}-{id(self):x}",
                    protocol=self.protocol,
                    timeout=5,
                    socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                )
                async with client:
                    await client.subscribe(f"{self.prefix}/+/cmd", qos=1)
                    self.connected.set()
                    log.info("meters simulator: %d meters on %s:%d", len(self.meters), self.host, self.port)
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                log.info("meters simulator: broker link down (%s); retrying", exc)
            finally:
                self.connected.clear()
            await asyncio.sleep(self.reconnect_delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        for meter in self.meters.values():
            await self._publish_status(client, meter)
        tasks = [asyncio.create_task(self._answer(client))]
        tasks += [asyncio.create_task(self._report(client, m)) for m in self.meters.values()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()

    async def _report(self, client: aiomqtt.Client, meter: WaterMeter) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        sent = 0
        while True:
            await asyncio.sleep(meter.report_interval)
            now = loop.time()
            meter.step((now - last) * self.speed)
            last = now
            meter.report()
            ts = time.time_ns() // 1_000_000
            body = {"ts": ts, "flow": round(meter.flow, 4), "volume": round(meter.volume, 4)}
            await client.publish(self.topic(meter.meter_id, "telemetry"), orjson.dumps(body), qos=0)
            sent += 1
            if sent % self.status_every == 0:
                await self._publish_status(client, meter)

    async def _publish_status(self, client: aiomqtt.Client, meter: WaterMeter) -> None:
        body = {
            "time": _iso(time.time_ns() // 1_000_000),
            "battery": round(meter.battery, 3),
            "valve": "open" if meter.valve_open else "closed",
            "leak": meter.leak_alarm,
            "interval": meter.report_interval,
        }
        await client.publish(self.topic(meter.meter_id, "status"), orjson.dumps(body), qos=1, retain=True)

    async def _answer(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parts = str(message.topic).split("/")
            meter = self.meters.get(parts[-2]) if len(parts) >= 2 else None
            if meter is None:
                continue  # not one of ours: a real meter that is not there does not answer
            self.commands += 1
            props = message.properties
            response_topic = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            payload = message.payload if isinstance(message.payload, bytes) else b""
            reply = self._execute(meter, payload)
            out = None
            if correlation is not None:
                out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                out.CorrelationData = correlation
            topic = response_topic or self.topic(meter.meter_id, "reply")
            await client.publish(topic, orjson.dumps(reply), qos=1, properties=out)
            await self._publish_status(client, meter)

    def _execute(self, meter: WaterMeter, payload: bytes) -> dict[str, Any]:
        try:
            command = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return {"id": None, "error": "command is not JSON"}
        if not isinstance(command, dict):
            return {"id": None, "error": "command is not a JSON object"}
        reply: dict[str, Any] = {"id": command.get("id"), "error": None}
        kind = command.get("cmd")
        if kind == "valve":
            wanted = command.get("open")
            if not isinstance(wanted, bool):
                reply["error"] = "'open' must be true or false"
            else:
                meter.valve_open = wanted
                if not wanted:
                    meter.flow = 0.0
        elif kind == "config":
            interval = command.get("report_interval")
            if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= 3600:
                reply["error"] = "'report_interval' must be an integer 1..3600"
            else:
                meter.report_interval = interval
        else:
            reply["error"] = f"unknown command {kind!r}"
        reply.update(valve="open" if meter.valve_open else "closed",
                     open=meter.valve_open, report_interval=meter.report_interval)
        return reply


async def serve(
    broker_url: str,
    count: int = 3,
    prefix: str = "meters",
    report_interval: int = 1,
    speed: float = 1.0,
    seed: int | None = None,
) -> None:
    """Run the meters until cancelled (``citytwin sim meters``)."""
    sim = MetersSimulator(broker_url, count, prefix, report_interval, speed=speed, seed=seed)
    async with sim:
        await asyncio.Event().wait()

