"""The sensor-fault case against a real Modbus slave (libmodbus): the wet-well level register is
changed under the gateway by another Modbus client, as a failing sensor would change it.

In range → the pump start succeeds; the sensor's fault code (655.35 m, outside the model's
0–6 m) → refused, nothing written to the coil; back in range → succeeds.
"""

from __future__ import annotations

from pathlib import Path

from harness import InProcessGateway
from modbus_peers import LibmodbusSlave
from pymodbus.client import AsyncModbusTcpClient

CONFIG = """
gateway: {id: modbus-trust, data_dir: DATA_DIR}
hub: {url: "mqtt://127.0.0.1:1", reconnect_max: 60}
http: {enabled: false}
access:
  grants: [{operators: [tester], role: operator}]
devices:
  - id: ps
    model: pump_station
    driver: modbus-tcp
    connection: {host: 127.0.0.1, port: PORT, timeout: 1.0}
    poll_period: 0.1
    points:
      level:       {table: holding_register, address: 240, scale: 0.01}
      pump1_fault: {table: holding_register, address: 241, type: bool, bit: 0}
      pump2_fault: {table: holding_register, address: 241, type: bool, bit: 1}
    outputs:
      pump1_run_cmd: {table: coil, address: 40}
      pump2_run_cmd: {table: coil, address: 41}
    interlocks:
      - services: [start_pump]
        require: pump{pump}_fault == false
      - services: [start_pump]
        require: level >= 0.5
        message: the wet well is too low
    services:
      start_pump: {writes: [{point: "pump{pump}_run_cmd", value: true}]}
      stop_pump: {writes: [{point: "pump{pump}_run_cmd", value: false}]}
"""


async def test_a_failing_level_sensor_blocks_the_pump_start(tmp_path: Path, slave: LibmodbusSlave) -> None:
    sensor = AsyncModbusTcpClient("127.0.0.1", port=slave.port)
    await sensor.connect()
    try:
        async def set_level(raw: int) -> None:
            await sensor.write_register(240, raw, device_id=1)

        async def coil() -> bool:
            result = await sensor.read_coils(40, count=1, device_id=1)
            return bool(result.bits[0])

        async def command(command_id: str, service: str) -> dict[str, object]:
            return await gw.command("ps", "invoke", service, {"id": command_id, "input": {"pump": 1}})

        await set_level(250)  # 2.50 m
        async with InProcessGateway(CONFIG.replace("PORT", str(slave.port)), tmp_path, None) as gw:
            runner = gw.gw.runners["ps"]
            await gw.wait_for(lambda: (c := runner.current("level")) is not None and c.value == 2.5, what="level 2.5")
            assert (await command("ok-1", "start_pump"))["status"] == "succeeded"
            assert await coil() is True
            assert (await command("ok-2", "stop_pump"))["status"] == "succeeded"
            assert await coil() is False

            await set_level(65535)  # the sensor's fault code
            await gw.wait_for(lambda: (c := runner.current("level")) is not None and c.quality == "uncertain",
                              what="level uncertain")
            reply = await command("fault-1", "start_pump")
            assert reply["status"] == "rejected", reply
            assert reply["error"]["message"] == (  # type: ignore[index]
                "interlock 2 (require level >= 0.5): level is uncertain: 655.35 is above max 6")
            assert await coil() is False  # nothing was written

            await set_level(250)
            await gw.wait_for(lambda: (c := runner.current("level")) is not None and c.quality == "good",
                              what="level good again")
            assert (await command("ok-3", "start_pump"))["status"] == "succeeded"
            assert await coil() is True
    finally:
        sensor.close()
