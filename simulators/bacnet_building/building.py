"""The building's BACnet objects and their physics (bacpypes3 local objects, COV-capable).

The objects are bacpypes3's own local object classes, so the simulator answers
ReadProperty(Multiple), WriteProperty with priorities and SubscribeCOV exactly as the
library's device side does; ``step`` moves the plant on: the unit's controller drives the
supply air to its setpoint while the fan runs, the filter loads up, occupancy changes and
the zones draw power as they are lit.
"""

from __future__ import annotations

import math
import random
from typing import Any

from bacpypes3.local.analog import AnalogInputObject, AnalogOutputObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject

ZONE_BASE = 100
RATED_W = 400.0
FILTER_ALARM_PA = 250.0
FAN_DELAY_S = 2.0
COIL_K = 12.0  # the cooling coil takes at most this much off the return air


def _common(kind: str, instance: int, name: str) -> dict[str, Any]:
    return {
        "objectIdentifier": (kind, instance),
        "objectName": name,
        "statusFlags": [0, 0, 0, 0],
        "eventState": "normal",
        "outOfService": False,
    }


def _analog_in(instance: int, name: str, value: float, units: str, increment: float) -> Any:
    return AnalogInputObject(
        **_common("analog-input", instance, name), presentValue=value, units=units, covIncrement=increment
    )


class Building:
    """An air-handling unit and ``zones`` lighting zones; ``objects`` by name."""

    def __init__(self, zones: int = 4, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.time = 0.0
        self.fan_since: float | None = None
        self.objects: dict[str, Any] = {}
        add = self._add
        add(_analog_in(1, "ahu-supply-air-temp", 22.0, "degreesCelsius", 0.1))
        add(_analog_in(2, "ahu-return-air-temp", 23.0, "degreesCelsius", 0.1))
        add(_analog_in(3, "ahu-filter-dp", 120.0, "pascals", 1.0))
        add(_analog_in(4, "ahu-cooling-valve", 0.0, "percent", 1.0))
        add(AnalogValueObjectCmd(
            **_common("analog-value", 1, "ahu-supply-air-temp-setpoint"),
            presentValue=16.0, relinquishDefault=16.0, units="degreesCelsius", covIncrement=0.1,
        ))
        add(BinaryOutputObject(
            **_common("binary-output", 1, "ahu-supply-fan-command"),
            presentValue="inactive", relinquishDefault="inactive", polarity="normal",
        ))
        add(BinaryInputObject(
            **_common("binary-input", 1, "ahu-supply-fan-status"), presentValue="inactive", polarity="normal",
        ))
        for k in range(1, zones + 1):
            i = ZONE_BASE + k
            add(BinaryOutputObject(
                **_common("binary-output", i, f"zone-{k}-lights"),
                presentValue="inactive", relinquishDefault="inactive", polarity="normal",
            ))
            add(AnalogOutputObject(
                **_common("analog-output", i, f"zone-{k}-level"),
                presentValue=80.0, relinquishDefault=80.0, units="percent", covIncrement=1.0,
            ))
            add(BinaryInputObject(
                **_common("binary-input", i, f"zone-{k}-occupancy"), presentValue="inactive", polarity="normal",
            ))
            add(_analog_in(i, f"zone-{k}-power", 0.0, "watts", 1.0))
        self.zones = zones

    def _add(self, obj: Any) -> None:
        self.objects[str(obj.objectName)] = obj

    def value(self, name: str) -> Any:
        return self.objects[name].presentValue

    def _set(self, name: str, value: Any) -> None:
        obj = self.objects[name]
        if not obj.outOfService:  # out of service: the value is the operator's, not the plant's
            obj.presentValue = value

    def set_flags(self, name: str, *, fault: bool = False, out_of_service: bool = False,
                  in_alarm: bool = False) -> None:
        """Fault injection for tests and demos. bacpypes3 derives status-flags from the event
        state, reliability and out-of-service (overridden is always clear), so those are set;
        the flags are assigned first, which is what tells the COV detection to notify."""
        obj = self.objects[name]
        obj.statusFlags = [int(in_alarm), int(fault), 0, int(out_of_service)]
        obj.eventState = "offnormal" if in_alarm else "normal"
        obj.reliability = "unreliable-other" if fault else "no-fault-detected"
        obj.outOfService = out_of_service

    def step(self, dt: float) -> None:
        self.time += dt
        t = self.time
        fan_on = int(self.value("ahu-supply-fan-command")) == 1
        if fan_on and self.fan_since is None:
            self.fan_since = t
        elif not fan_on:
            self.fan_since = None
        running = self.fan_since is not None and t - self.fan_since >= FAN_DELAY_S
        self._set("ahu-supply-fan-status", "active" if running else "inactive")
        ret = 23.0 + 1.5 * math.sin(2 * math.pi * t / 3600.0)
        self._set("ahu-return-air-temp", round(ret, 2))
        supply = float(self.value("ahu-supply-air-temp"))
        setpoint = float(self.value("ahu-supply-air-temp-setpoint"))
        if running:
            valve = max(0.0, min(100.0, (ret - setpoint) / COIL_K * 100.0))
            target = ret - valve / 100.0 * COIL_K
        else:
            valve, target = 0.0, ret
        supply += (target - supply) * min(1.0, dt / 20.0)
        self._set("ahu-supply-air-temp", round(supply + self.rng.gauss(0, 0.02), 2))
        self._set("ahu-cooling-valve", round(valve, 1))
        if running:
            dp = float(self.value("ahu-filter-dp")) + 0.05 * dt
            self._set("ahu-filter-dp", round(dp, 1))
            obj = self.objects["ahu-filter-dp"]
            alarm = dp > FILTER_ALARM_PA
            if not obj.outOfService and bool(obj.statusFlags[0]) != alarm:
                obj.statusFlags = [int(alarm), *list(obj.statusFlags)[1:]]
                obj.eventState = "offnormal" if alarm else "normal"  # what the flags derive from
        for k in range(1, self.zones + 1):
            if self.rng.random() < dt / 120.0:
                occupied = int(self.value(f"zone-{k}-occupancy")) == 1
                self._set(f"zone-{k}-occupancy", "inactive" if occupied else "active")
            lit = int(self.value(f"zone-{k}-lights")) == 1
            level = float(self.value(f"zone-{k}-level"))
            self._set(f"zone-{k}-power", round(RATED_W * level / 100.0 if lit else 0.0, 1))
