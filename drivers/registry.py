"""Driver names to binding models and factories, importing protocol modules lazily.

The gateway validates a config with ``binding_models(name)`` (pydantic only) and creates
drivers with ``create_driver``; only the latter imports the protocol library, so loading
or checking a config never pays for (or requires) pymodbus and friends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from pydantic import BaseModel

from citytwin.drivers.base import Driver
from citytwin.drivers.errors import BindingError


def _never(point: BaseModel) -> bool:
    return False


class BindingModels(NamedTuple):
    """What the gateway needs to know about a driver's bindings, without importing it.

    ``connection`` and ``point`` are the pydantic models its config is validated with
    (the gateway subclasses ``point`` to add scale/offset/deadband); ``call`` validates a
    service's ``call:`` binding for drivers with callable operations (None: services are
    bound to writes only). ``writable(point)`` says whether a point can be written;
    ``integer_raw(point)`` whether its raw value is an integer (so a scaled engineering
    value is rounded before it is written); ``float32(point)`` whether the raw value is a
    single-precision float (reported to 7 significant digits).
    """

    connection: type[BaseModel]
    point: type[BaseModel]
    call: type[BaseModel] | None = None
    writable: Callable[[BaseModel], bool] = _never
    integer_raw: Callable[[BaseModel], bool] = _never
    float32: Callable[[BaseModel], bool] = _never


def _modbus_tcp_models() -> BindingModels:
    from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
    from citytwin.drivers.modbus.codec import WRITABLE_TABLES

    def writable(point: BaseModel) -> bool:
        return isinstance(point, ModbusPoint) and point.table in WRITABLE_TABLES

    def integer_raw(point: BaseModel) -> bool:
        return isinstance(point, ModbusPoint) and point.type not in ("float32", "float64", "bool")

    def float32(point: BaseModel) -> bool:
        return isinstance(point, ModbusPoint) and point.type == "float32"

    return BindingModels(ModbusTcpConnection, ModbusPoint, None, writable, integer_raw, float32)


def _modbus_tcp_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection

    if not isinstance(connection, ModbusTcpConnection):
        raise BindingError(
            f"modbus-tcp needs a ModbusTcpConnection, not {type(connection).__name__}"
        )
    checked: dict[str, ModbusPoint] = {}
    for name, point in points.items():
        if not isinstance(point, ModbusPoint):
            raise BindingError(f"point {name!r}: modbus-tcp needs a ModbusPoint binding")
        checked[name] = point
    try:
        from citytwin.drivers.modbus.tcp import ModbusTcpDriver
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"driver 'modbus-tcp' needs {exc.name}: pip install 'pymodbus>=3.16,<3.17'"
        ) from exc
    return ModbusTcpDriver(connection, checked)


_DRIVERS: dict[str, tuple[Callable[[], BindingModels], Callable[..., Driver]]] = {
    "modbus-tcp": (_modbus_tcp_models, _modbus_tcp_driver),
}
DRIVER_NAMES: tuple[str, ...] = tuple(_DRIVERS)


def _entry(name: str) -> tuple[Callable[[], BindingModels], Callable[..., Driver]]:
    try:
        return _DRIVERS[name]
    except KeyError:
        known = ", ".join(DRIVER_NAMES)
        raise BindingError(f"unknown driver {name!r}; known drivers: {known}") from None


def binding_models(name: str) -> BindingModels:
    """The connection and point models of driver ``name``; imports no protocol library."""
    return _entry(name)[0]()


def create_driver(name: str, connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    """A new, unconnected driver ``name`` for one device and its validated point bindings."""
    return _entry(name)[1](connection, points)
