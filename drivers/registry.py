"""Driver names to binding models and factories, importing protocol modules lazily.

The gateway validates a config with ``binding_models(name)`` (pydantic only) and creates
drivers with ``create_driver``; only the latter imports the protocol library, so loading
or checking a config never pays for (or requires) pymodbus and friends.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import NamedTuple, cast

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
    single-precision float (reported to 7 significant digits); ``text(point)`` whether the
    raw value is a string (so a thing model's ``text`` property may bind to it).
    """

    connection: type[BaseModel]
    point: type[BaseModel]
    call: type[BaseModel] | None = None
    writable: Callable[[BaseModel], bool] = _never
    integer_raw: Callable[[BaseModel], bool] = _never
    float32: Callable[[BaseModel], bool] = _never
    text: Callable[[BaseModel], bool] = _never



def _build(
    name: str,
    connection: BaseModel,
    points: Mapping[str, BaseModel],
    types: tuple[type[BaseModel], type[BaseModel]],
    article: str,
    driver: str,
    install: str,
    requires: tuple[str, ...] = (),
) -> Driver:
    """Check the bindings are this driver's own, then import and create it (``module:Class``)."""
    connection_type, point_type = types
    if not isinstance(connection, connection_type):
        raise BindingError(f"{name} needs {article} {connection_type.__name__}, not {type(connection).__name__}")
    for point_name, point in points.items():
        if not isinstance(point, point_type):
            raise BindingError(f"point {point_name!r}: {name} needs {article} {point_type.__name__} binding")
    module, cls = driver.split(":")
    try:
        for extra in requires:  # e.g. pyserial, which pymodbus only complains about later
            importlib.import_module(extra)
        driver_class = getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        raise ImportError(f"driver {name!r} needs {exc.name}: pip install {install}") from exc
    return cast(Driver, driver_class(connection, dict(points)))

def _modbus_tcp_models() -> BindingModels:
    from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
    from citytwin.drivers.modbus.codec import WRITABLE_TABLES

    def writable(point: BaseModel) -> bool:
        return isinstance(point, ModbusPoint) and point.table in WRITABLE_TABLES

    def integer_raw(point: BaseModel) -> bool:
        return isinstance(point, ModbusPoint) and point.type not in (
            "float32", "float64", "bool", "string"
        )

    def float32(point: BaseModel) -> bool:
        return isinstance(point, ModbusPoint) and point.type == "float32"

    def text(point: BaseModel) -> bool:
        return isinstance(point, ModbusPoint) and point.type == "string"

    return BindingModels(
        ModbusTcpConnection, ModbusPoint, None, writable, integer_raw, float32, text
    )


def _modbus_tcp_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection

    return _build(
        "modbus-tcp", connection, points, (ModbusTcpConnection, ModbusPoint), "a",
        "citytwin.drivers.modbus.tcp:ModbusTcpDriver", "'pymodbus>=3.16,<3.17'",
    )


def _modbus_rtu_models() -> BindingModels:
    from citytwin.drivers.modbus.binding import ModbusRtuConnection

    tcp = _modbus_tcp_models()
    return tcp._replace(connection=ModbusRtuConnection)


def _modbus_rtu_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.modbus.binding import ModbusPoint, ModbusRtuConnection

    return _build(
        "modbus-rtu", connection, points, (ModbusRtuConnection, ModbusPoint), "a",
        "citytwin.drivers.modbus.rtu:ModbusRtuDriver", "'pymodbus>=3.16,<3.17' 'pyserial>=3.5,<4'",
        requires=("serial",),
    )


def _modbus_rtu_over_tcp_models() -> BindingModels:
    from citytwin.drivers.modbus.binding import ModbusRtuOverTcpConnection

    return _modbus_tcp_models()._replace(connection=ModbusRtuOverTcpConnection)


def _modbus_rtu_over_tcp_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.modbus.binding import ModbusPoint, ModbusRtuOverTcpConnection

    return _build(
        "modbus-rtu-over-tcp", connection, points, (ModbusRtuOverTcpConnection, ModbusPoint), "a",
        "citytwin.drivers.modbus.rtu_over_tcp:ModbusRtuOverTcpDriver", "'pymodbus>=3.16,<3.17'",
    )


def _mqtt_models() -> BindingModels:
    from citytwin.drivers.mqtt_device.binding import MqttCall, MqttConnection, MqttPoint

    def writable(point: BaseModel) -> bool:
        return isinstance(point, MqttPoint) and point.set is not None

    return BindingModels(MqttConnection, MqttPoint, MqttCall, writable)


def _mqtt_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.mqtt_device.binding import MqttConnection, MqttPoint

    return _build(
        "mqtt", connection, points, (MqttConnection, MqttPoint), "an",
        "citytwin.drivers.mqtt_device.driver:MqttDeviceDriver", "'aiomqtt>=2.5,<3'",
    )


def _coap_models() -> BindingModels:
    from citytwin.drivers.coap.binding import CoapCall, CoapConnection, CoapPoint

    def writable(point: BaseModel) -> bool:
        return isinstance(point, CoapPoint) and point.writable

    return BindingModels(CoapConnection, CoapPoint, CoapCall, writable)


def _coap_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.coap.binding import CoapConnection, CoapPoint

    return _build(
        "coap", connection, points, (CoapConnection, CoapPoint), "a",
        "citytwin.drivers.coap.driver:CoapDriver", "'aiocoap>=0.4.17,<0.5' 'cbor2>=5.6,<7'",
    )


def _opcua_models() -> BindingModels:
    from citytwin.drivers.opcua.binding import INTEGER_TYPES, OpcUaCall, OpcUaConnection, OpcUaPoint

    def writable(point: BaseModel) -> bool:
        return isinstance(point, OpcUaPoint) and point.writable

    def integer_raw(point: BaseModel) -> bool:
        return isinstance(point, OpcUaPoint) and point.type in INTEGER_TYPES

    def float32(point: BaseModel) -> bool:
        return isinstance(point, OpcUaPoint) and point.type == "Float"

    return BindingModels(OpcUaConnection, OpcUaPoint, OpcUaCall, writable, integer_raw, float32)


def _opcua_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.opcua.binding import OpcUaConnection, OpcUaPoint

    return _build(
        "opcua", connection, points, (OpcUaConnection, OpcUaPoint), "an",
        "citytwin.drivers.opcua.driver:OpcUaDriver", "'asyncua>=2.1,<2.2'",
    )


def _bacnet_models() -> BindingModels:
    from citytwin.drivers.bacnet.binding import (
        ANALOG,
        BINARY,
        TEXT,
        BacnetCall,
        BacnetConnection,
        BacnetPoint,
    )

    def writable(point: BaseModel) -> bool:
        return isinstance(point, BacnetPoint) and point.writable

    def integer_raw(point: BaseModel) -> bool:
        return isinstance(point, BacnetPoint) and point.kind not in ANALOG | BINARY | TEXT

    def float32(point: BaseModel) -> bool:  # BACnet REAL is single precision
        return isinstance(point, BacnetPoint) and point.kind in ANALOG - {"large-analog-value"}

    def text(point: BaseModel) -> bool:
        return isinstance(point, BacnetPoint) and point.kind in TEXT

    return BindingModels(BacnetConnection, BacnetPoint, BacnetCall, writable, integer_raw, float32, text)


def _bacnet_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.bacnet.binding import BacnetConnection, BacnetPoint

    return _build(
        "bacnet", connection, points, (BacnetConnection, BacnetPoint), "a",
        "citytwin.drivers.bacnet.driver:BacnetDriver", "'bacpypes3>=0.0.110,<0.0.120'",
    )


_DRIVERS: dict[str, tuple[Callable[[], BindingModels], Callable[..., Driver]]] = {
    "modbus-tcp": (_modbus_tcp_models, _modbus_tcp_driver),
    "modbus-rtu": (_modbus_rtu_models, _modbus_rtu_driver),
    "modbus-rtu-over-tcp": (_modbus_rtu_over_tcp_models, _modbus_rtu_over_tcp_driver),
    "mqtt": (_mqtt_models, _mqtt_driver),
    "coap": (_coap_models, _coap_driver),
    "opcua": (_opcua_models, _opcua_driver),
    "bacnet": (_bacnet_models, _bacnet_driver),
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
