"""The gateways under test, each driven on the same slave and broker with the same shapes.

- ``citytwin``: ``citytwin run`` on a generated config (K uint16 registers, the uint32
  sentinel, a writable setpoint; one coalesced read per device per poll).
- ``naive``: benchmarks/naive.py, what a first attempt looks like.
- ``thingsboard``: ThingsBoard IoT Gateway 3.8.x from PyPI in its own virtual environment
  (see ``thingsboard.py``).

Each subject writes its config into a work directory, starts its process and knows how to
send one command and recognise its reply.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import yaml

from benchmarks.procs import ROOT

PREFIX = "citytwin/v1"
GATEWAY_ID = "bench"


@dataclass(frozen=True, slots=True)
class Shape:
    devices: int
    k: int  # changing registers per device (each device also has the sentinel and the setpoint)
    period: float
    source: str = "slave"  # "slave": the libmodbus bench slave; "sim": our pump-station simulator

    @property
    def label(self) -> str:
        if self.source == "sim":
            return f"{self.devices} pump-station sims@{self.period * 1000:.0f}ms"
        return f"{self.devices}×{self.k}@{self.period * 1000:.0f}ms"

    @property
    def points_per_poll(self) -> int:
        return self.k + 2


def device_id(i: int) -> str:
    return f"d{i:04d}"


class Subject(Protocol):
    name: str

    reply_topics: tuple[str, ...]

    @property
    def topics(self) -> list[str]:
        """What the counting subscriber takes in."""
        ...

    def start(self, work: Path, broker: int, slave: int, shape: Shape) -> subprocess.Popen[bytes]: ...

    def command(self, device: str, n: int, value: int) -> tuple[str, bytes, str]:
        """(topic, payload, key) of command ``n``; its reply carries the same key."""
        ...

    def reply_id(self, topic: str, body: dict[str, Any]) -> str | None:
        """The key of the command a reply answers (None: not a reply)."""
        ...


def _model(k: int) -> dict[str, Any]:
    def prop(name: str, maximum: int, access: str = "r") -> dict[str, Any]:
        return {"identifier": name, "name": name, "accessMode": access, "required": False,
                "dataType": {"type": "int", "specs": {"min": "0", "max": str(maximum), "step": "1"}}}

    return {
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"productKey": "citytwin.bench.registers", "version": "1.0"},
        "properties": [*(prop(f"r_{i}", 65535) for i in range(k)), prop("sentinel", 2**31 - 1),
                       prop("setpoint", 65535, "rw")],
        "events": [],
        "services": [{
            "identifier": "set_point", "name": "set_point", "callType": "sync", "required": False,
            "method": "thing.service.set_point",
            "inputData": [{"identifier": "value", "name": "value",
                           "dataType": {"type": "int", "specs": {"min": "0", "max": "65535", "step": "1"}}}],
            "outputData": [],
        }],
    }


class Citytwin:
    name = "citytwin"

    def __init__(self, sim: bool = False) -> None:
        self.sim = sim  # our pump-station simulator instead of the libmodbus slave

    @property
    def topics(self) -> list[str]:
        return [f"{PREFIX}/{GATEWAY_ID}/+/properties/report"]

    reply_topics: tuple[str, ...] = (f"{PREFIX}/{GATEWAY_ID}/+/replies",)

    def config(self, work: Path, broker: int, slave: int, shape: Shape) -> Path:
        path = work / "gateway.yaml"
        path.write_text(yaml.safe_dump(self.document(work, broker, slave, shape), sort_keys=False))
        return path

    def document(self, work: Path, broker: int, slave: int, shape: Shape) -> dict[str, Any]:
        (work / "model.json").write_text(json.dumps(_model(shape.k)))
        points: dict[str, Any] = {f"r_{i}": {"table": "holding_register", "address": i, "type": "uint16"}
                                  for i in range(shape.k)}
        points["sentinel"] = {"table": "holding_register", "address": shape.k, "type": "uint32"}
        points["setpoint"] = {"table": "holding_register", "address": shape.k + 2, "type": "uint16"}
        devices = [{
            "id": device_id(i), "model": "model.json", "driver": "modbus-tcp",
            "connection": {"host": "127.0.0.1", "port": slave, "unit": 1, "timeout": 2.0},
            "poll_period": shape.period, "points": points,
            "services": {"set_point": {"writes": [{"point": "setpoint", "value": "$value"}]}},
        } for i in range(shape.devices)]
        doc = {
            "gateway": {"id": GATEWAY_ID, "data_dir": str(work / "data")},
            "hub": {"url": f"mqtt://127.0.0.1:{broker}", "prefix": PREFIX, "snapshot_interval": 600,
                    "reconnect_min": 0.2, "reconnect_max": 1.0},
            "access": {"identity": ["user_property", "payload"], "anonymous": "operator", "grants": []},
            "http": {"enabled": False},
            "devices": devices,
        }
        return doc

    def start(self, work: Path, broker: int, slave: int, shape: Shape) -> subprocess.Popen[bytes]:
        path = self.config(work, broker, slave, shape)
        return subprocess.Popen([sys.executable, "-m", "citytwin.gateway.cli", "--log-level", "warning",
                                 "run", "-c", str(path)], cwd=work)

    def command(self, device: str, n: int, value: int) -> tuple[str, bytes, str]:
        return (f"{PREFIX}/{GATEWAY_ID}/{device}/services/set_point/invoke",
                orjson.dumps({"id": f"c{n}", "input": {"value": value}}), f"c{n}")

    def reply_id(self, topic: str, body: dict[str, Any]) -> str | None:
        if topic.endswith("/replies") and body.get("status") == "succeeded":
            return str(body["id"])
        return None


class CitytwinFleet(Citytwin):
    """The same gateway and devices, written as one template and a CSV inventory (one row
    per device) instead of every device carrying its point map (docs/operations.md)."""

    name = "citytwin-fleet"

    def document(self, work: Path, broker: int, slave: int, shape: Shape) -> dict[str, Any]:
        doc = super().document(work, broker, slave, shape)
        devices = doc.pop("devices")
        doc["templates"] = {"registers": {k: v for k, v in devices[0].items() if k != "id"}}
        rows = "".join(f"{d['id']},registers\n" for d in devices)
        (work / "inventory.csv").write_text("id,template\n" + rows)
        doc["devices"] = []
        doc["inventory"] = "inventory.csv"
        return doc


class PumpStations(Citytwin):
    """citytwin on N pump-station simulators (17 points each, deadband 0): realistic values that
    change as the simulated physics moves, not every poll; no latency sentinel."""

    def __init__(self) -> None:
        super().__init__(sim=True)
        self.simulator: subprocess.Popen[bytes] | None = None

    def start(self, work: Path, broker: int, slave: int, shape: Shape) -> subprocess.Popen[bytes]:
        from benchmarks.foundation import gateway_config
        from benchmarks.procs import port_block, wait_port

        port = port_block(shape.devices)
        self.simulator = subprocess.Popen(
            [sys.executable, "-m", "citytwin.gateway.cli", "--log-level", "warning", "sim", "pump-station",
             "--port", str(port), "--count", str(shape.devices), "--seed", "1"])
        wait_port(port + shape.devices - 1)
        path = work / "gateway.yaml"
        gateway_config(path, broker, port, shape.devices, shape.period)
        return subprocess.Popen([sys.executable, "-m", "citytwin.gateway.cli", "--log-level", "warning",
                                 "run", "-c", str(path)], cwd=work)

    def cleanup(self) -> None:
        from benchmarks.procs import stop

        stop(self.simulator)
        self.simulator = None


class Naive:
    name = "naive"

    @property
    def topics(self) -> list[str]:
        return ["naive/+/+"]

    reply_topics: tuple[str, ...] = ("naive-reply/+",)

    def start(self, work: Path, broker: int, slave: int, shape: Shape) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "benchmarks.naive", str(broker), str(slave),
                                 str(shape.devices), str(shape.k), str(shape.period)], cwd=ROOT)

    def command(self, device: str, n: int, value: int) -> tuple[str, bytes, str]:
        return f"naive-cmd/{device}/set", orjson.dumps({"id": f"c{n}", "value": value}), f"c{n}"

    def reply_id(self, topic: str, body: dict[str, Any]) -> str | None:
        return str(body["id"]) if topic.startswith("naive-reply/") else None
