"""The naive baseline: what a first attempt at a Modbus-to-MQTT gateway looks like.

One Modbus request per point, one MQTT message per point (QoS 1, stdlib ``json``), no
coalescing, no report-by-exception, no store-and-forward: per device a loop that reads
every point in turn, publishes every value in turn, then sleeps out the rest of its period.
It uses the same libraries as citytwin (pymodbus, aiomqtt) so the ratio measures the design.

Usage: python -m benchmarks.naive BROKER_PORT SLAVE_PORT DEVICES K PERIOD
Commands: ``naive-cmd/<device>/set`` ``{"id", "value"}`` writes the setpoint register and
answers on ``naive-reply/<device>``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

import aiomqtt
from pymodbus.client import AsyncModbusTcpClient


async def device(name: str, slave: int, k: int, period: float, hub: aiomqtt.Client,
                 clients: dict[str, AsyncModbusTcpClient]) -> None:
    modbus = AsyncModbusTcpClient("127.0.0.1", port=slave, timeout=5, retries=0)
    await modbus.connect()
    clients[name] = modbus
    points = [(f"r_{i}", i, 1) for i in range(k)] + [("sentinel", k, 2), ("setpoint", k + 2, 1)]
    while True:
        started = time.monotonic()
        for point, address, count in points:
            answer = await modbus.read_holding_registers(address, count=count, device_id=1)
            regs = answer.registers
            value = regs[0] if count == 1 else (regs[0] << 16) | regs[1]
            payload = json.dumps({"value": value, "ts": int(time.time() * 1000)})
            await hub.publish(f"naive/{name}/{point}", payload, qos=1)
        await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))


async def main(broker: int, slave: int, devices: int, k: int, period: float) -> None:
    clients: dict[str, AsyncModbusTcpClient] = {}
    async with aiomqtt.Client("127.0.0.1", broker, max_queued_outgoing_messages=0,
                              socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as hub:
        await hub.subscribe("naive-cmd/+/set", qos=1)
        tasks = [asyncio.create_task(device(f"d{i:04d}", slave, k, period, hub, clients))
                 for i in range(devices)]
        async for message in hub.messages:
            name = str(message.topic).split("/")[1]
            assert isinstance(message.payload, bytes)
            body = json.loads(message.payload)
            modbus = clients.get(name)
            if modbus is None:
                continue
            await modbus.write_register(k + 2, int(body["value"]), device_id=1)
            await hub.publish(f"naive-reply/{name}", json.dumps({"id": body["id"], "status": "succeeded"}), qos=1)
        for task in tasks:
            task.cancel()


if __name__ == "__main__":
    broker_port, slave_port, count, registers = (int(a) for a in sys.argv[1:5])
    asyncio.run(main(broker_port, slave_port, count, registers, float(sys.argv[5])))
