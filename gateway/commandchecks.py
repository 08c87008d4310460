"""The checks a command passes before anything touches a device, apart from access.

Expiry, then the thing model (the service exists, inputs are present and in range, the
property is writable and bound), then the plan: which points are written with which values,
or which driver call is made. Interlocks run last, on the plan's normalized inputs
(``gateway/interlocks.py``). Each refusal is a ``Rejected`` with the reply's error code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from citytwin.drivers.templates import MissingInput, fill, input_reference
from citytwin.gateway.commandrequests import Rejected, Request
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.thingmodels.types import CallType


def check_expiry(request: Request) -> None:
    if request.expires_at is None:
        return
    now = time.time_ns() // 1_000_000
    if now > request.expires_at:
        late = (now - request.expires_at) / 1000
        raise Rejected("expired", f"expired {late:.1f} s ago (expires_at {request.expires_at}); not executed")


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """What running one service on one device means: writes in order, or one driver call."""

    inputs: dict[str, Any]  # normalized by the model
    writes: dict[str, Any]  # property or output -> model value (empty for a call)
    call: Any  # the driver's call binding, or None
    timeout: float
    asynchronous: bool  # the model declares the call async: answer "accepted" first

    def describe(self) -> dict[str, Any]:
        """What a dry run says it would have done."""
        if self.call is not None:
            return {"call": self.call.model_dump(mode="json"), "inputs": self.inputs}
        return {"writes": self.writes}


def plan_service(spec: DeviceSpec, service_id: str, given: Mapping[str, Any]) -> ServicePlan:
    model = spec.model
    problems = model.check_service_input(service_id, given)
    if problems:
        code = "unknown_service" if service_id not in model.services else "invalid_input"
        raise Rejected(code, "; ".join(problems))
    binding = spec.services.get(service_id)
    if binding is None:
        raise Rejected("not_bound", f"service {service_id!r} has no binding on device {spec.id!r}")
    service = model.services[service_id]
    inputs = {k: service.inputs[k].normalize(v) for k, v in given.items()}
    asynchronous = service.call_type is CallType.ASYNC
    if binding.call is not None:
        return ServicePlan(inputs, {}, binding.call, binding.timeout, asynchronous)
    writes: dict[str, Any] = {}
    try:
        for step in binding.writes:
            point = fill(step.point, inputs)
            ref = input_reference(step.value)
            if ref is not None and ref not in inputs:
                raise MissingInput(str(step.value), ref)
            writes[point] = inputs[ref] if ref is not None else step.value
    except MissingInput as exc:
        raise Rejected("invalid_input", f"service {service_id!r}: {exc}") from None
    return ServicePlan(inputs, writes, None, binding.timeout, asynchronous)


def property_writes(spec: DeviceSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """Model-checked, normalized values for writable, bound properties."""
    problems = spec.model.check_property_set(values)
    if problems:
        raise Rejected("invalid_input", "; ".join(problems))
    writes = {}
    for name, value in values.items():
        point = spec.points.get(name)
        if point is None or not point.writable:
            raise Rejected("not_bound", f"property {name!r} is not bound to a writable point")
        writes[name] = spec.model.properties[name].normalize(value)
    return writes


def raw_writes(spec: DeviceSpec, writes: Mapping[str, Any]) -> dict[str, Any]:
    """Model values to the raw values the driver writes (scale and offset undone)."""
    raw: dict[str, Any] = {}
    for name, value in writes.items():
        point = spec.points.get(name)
        if point is not None:
            raw[name] = point.to_raw(value)
        elif name in spec.outputs:
            raw[name] = value
        else:
            raise Rejected("not_bound", f"no point {name!r} on device {spec.id!r}")
    return raw
