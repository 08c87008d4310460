"""ThingsBoard IoT Gateway 3.8.x as a subject, in its own virtual environment under the cache.

Pitfalls handled here: it publishes nothing until a ThingsBoard server answers its
``getSessionLimits`` RPC (the harness's hub client answers it, see ``session_limits_reply``);
its Modbus connector pip-installs pymodbus 3.9.2 at start unless the venv already has it (we
pre-install it); it reads one request per key unless keys are declared as a register range,
so a device's K registers, sentinel and setpoint are one range ``0-(K+2)`` read in one request
(keys ``r_<address>``; the sentinel arrives as ``r_K``/``r_K+1``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson

from benchmarks.procs import CACHE
from benchmarks.subjects import Shape, device_id

VENV = CACHE / "tb-venv"
REQUIREMENTS = ["thingsboard-gateway>=3.8,<3.9", "pymodbus==3.9.2"]
RPC_REQUEST = "v1/devices/me/rpc/request/"
LIMITS = {"rateLimits": {}, "gatewayRateLimits": {}, "maxInflightMessages": 100, "maxPayloadSize": 65536}


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(install: bool) -> str | None:
    """None when ready; otherwise why not (the venv is created and installed when ``install``)."""
    if python().exists() and _version() is not None:
        return None
    if not install:
        return f"ThingsBoard IoT Gateway is not installed in {VENV} (run without --quick once to install it)"
    import venv

    VENV.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True).create(VENV)
    result = subprocess.run([str(python()), "-m", "pip", "install", "-q", *REQUIREMENTS],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"pip install {' '.join(REQUIREMENTS)} failed: {result.stderr.strip()[-500:]}"
    return None if _version() is not None else "thingsboard_gateway does not import after installing"


def _version() -> str | None:
    result = subprocess.run([str(python()), "-c", "from thingsboard_gateway.version import VERSION; print(VERSION)"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def version() -> str | None:
    return _version() if python().exists() else None


def session_limits_reply(topic: str) -> tuple[str, bytes] | None:
    """The answer a ThingsBoard server would give to the gateway's session-limits RPC."""
    if not topic.startswith(RPC_REQUEST):
        return None
    return "v1/devices/me/rpc/response/" + topic.removeprefix(RPC_REQUEST), orjson.dumps(LIMITS)


class ThingsBoard:
    name = "thingsboard"
    reply_topics: tuple[str, ...] = ("v1/gateway/rpc", RPC_REQUEST + "+")

    @property
    def topics(self) -> list[str]:
        return ["v1/gateway/telemetry"]

    def start(self, work: Path, broker: int, slave: int, shape: Shape) -> subprocess.Popen[bytes]:
        conf = work / "tb-config"
        conf.mkdir(parents=True, exist_ok=True)
        (work / "logs").mkdir(exist_ok=True)
        (conf / "tb_gateway.json").write_text(json.dumps(self._gateway(broker)))
        (conf / "modbus.json").write_text(json.dumps(self._modbus(slave, shape)))
        (conf / "logs.json").write_text(json.dumps({
            "version": 1, "disable_existing_loggers": False,
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(work / "logs" / "tb.log")}},
            "root": {"level": "WARNING", "handlers": ["file"]},
        }))
        env = dict(os.environ, TB_GW_CONFIG_DIR=str(conf))
        return subprocess.Popen([str(python()), "-c", "from thingsboard_gateway.tb_gateway import main; main()"],
                                cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _gateway(broker: int) -> dict[str, Any]:
        return {
            "thingsboard": {
                "host": "127.0.0.1", "port": broker, "remoteShell": False, "remoteConfiguration": False,
                "latencyDebugMode": False, "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600},
                "deviceFiltering": {"enable": False}, "maxPayloadSizeBytes": 65536, "minPackSendDelayMS": 50,
                "minPackSizeToSend": 500, "checkConnectorsConfigurationInSeconds": 3600,
                "handleDeviceRenaming": False, "security": {"type": "accessToken", "accessToken": "bench"},
                "qos": 1, "reportStrategy": {"type": "ON_RECEIVED"},
                "checkingDeviceActivity": {"checkDeviceInactivity": False},
            },
            "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 1_000_000},
            "grpc": {"enabled": False},
            "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
        }

    @staticmethod
    def _modbus(slave: int, shape: Shape) -> dict[str, Any]:
        k = shape.k
        slaves = [{
            "host": "127.0.0.1", "port": slave, "type": "tcp", "method": "socket", "unitId": 1,
            "deviceName": device_id(i), "deviceType": "bench", "timeout": 5, "byteOrder": "BIG",
            "wordOrder": "BIG", "retries": 0, "pollPeriod": int(shape.period * 1000),
            "connectAttemptTimeMs": 500, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 1000,
            "attributes": [],
            "timeseries": [{"tag": "r_${address}", "type": "16uint", "functionCode": 3, "objectsCount": 1,
                            "address": f"0-{k + 2}", "maxRegistersPerRequest": 125}],
            "attributeUpdates": [],
            "rpc": [{"tag": "set_point", "type": "16uint", "functionCode": 6, "objectsCount": 1,
                     "address": k + 2}],
        } for i in range(shape.devices)]
        return {"master": {"slaves": slaves}}

    def command(self, device: str, n: int, value: int) -> tuple[str, bytes, str]:
        # ThingsBoard 3.8.5 answers with "id": null, so a reply is matched by its device
        # (the harness sends one command at a time)
        return ("v1/gateway/rpc",
                orjson.dumps({"device": device, "data": {"id": n, "method": "set_point", "params": value}}), device)

    def reply_id(self, topic: str, body: dict[str, Any]) -> str | None:
        data = body.get("data")
        if topic == "v1/gateway/rpc" and isinstance(data, dict) and "method" not in data and "device" in body:
            return str(body["device"])
        return None
