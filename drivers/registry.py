"""Driver names to binding models and factories, importing protocol modules lazily.

The gateway validates a config with ``binding_models(name)`` (pydantic only) and creates
drivers with ``create_driver``; only the latter imports the protocol library, so loading
or checking a config never pays for (or requires) pymodbus and friends.

Besides the core (connection and point models, a factory), an entry carries hooks that keep
protocol knowledge here rather than in the gateway: ``check`` (does a point fit what the
thing model asks of it), ``prepare`` (where the driver's own files go) and the optional
capabilities ``call`` (callable operations) and ``discover`` (browse a device by URL).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

from pydantic import BaseModel

from citytwin.drivers.base import Driver
from citytwin.drivers.errors import BindingError
from citytwin.thingmodels.types import DataType, Kind

NUMERIC: frozenset[Kind] = frozenset({Kind.INT, Kind.ENUM, Kind.FLOAT, Kind.DOUBLE})
"""Kinds whose values are numbers on the wire (an enum is its integer value)."""


class PropertyUse(NamedTuple):
    """What the thing model asks of one point, as plain data for a driver's ``check`` hook.

    The point must carry values of ``data_type`` once the gateway has applied
    ``raw * scale + offset``; take writes when ``writable``; and be readable unless the
    model marks the property write-only. A service input written into a point is a use
    too, with ``writable`` and ``readable`` False: whether that point takes writes the
    gateway checks itself, and the input is never read back.
    """

    data_type: DataType
    writable: bool = False
    readable: bool = True
    scale: float = 1.0
    offset: float = 0.0

    @property
    def kind(self) -> Kind:
        return self.data_type.type

    def range_problem(self, raw_type: str, low: float, high: float) -> str | None:
        """Why raw values ``low..high`` of ``raw_type`` cannot carry the model's range (or
        enum values) after scale and offset; None when they can, or nothing is declared."""
        dt = self.data_type
        if dt.type not in NUMERIC:
            return None
        ends = (low * self.scale + self.offset, high * self.scale + self.offset)
        lo, hi = min(ends), max(ends)
        wanted = [v for v in (dt.min, dt.max) if v is not None] or list(dt.names)
        if not wanted or (lo <= min(wanted) and max(wanted) <= hi):
            return None
        span = f"{_num(min(wanted))}..{_num(max(wanted))}"
        transform = (
            "" if (self.scale, self.offset) == (1.0, 0.0)
            else f" with scale {_num(self.scale)} and offset {_num(self.offset)}"
        )
        return f"range {span} does not fit {raw_type}{transform} ({_num(lo)}..{_num(hi)})"


def _num(value: float) -> str:
    return f"{value:.10g}"


def kind_with_article(kind: Kind) -> str:
    """``an int``, ``a float``: a kind with its article, for findings' messages."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


class BindingFinding(NamedTuple):
    """One way a point binding does not fit its property, from a driver's ``check`` hook.

    ``rule`` is a check-binding rule id (``binding-type``, ``binding-range``,
    ``binding-writable``, ``binding-readable``, ``binding-write-value``: see
    docs/drivers.md); ``message`` says what is wrong without naming the property (the
    caller does); ``path`` is the offending field relative to the point, e.g. ``("table",)``
    or ``("set", "payload")`` (empty: the point as a whole, or a field it lacks).
    """

    rule: str
    message: str
    path: tuple[str | int, ...] = ()


Check = Callable[[BaseModel, PropertyUse], list[BindingFinding]]
Prepare = Callable[[BaseModel, Path, str], BaseModel]


class Discoverer(NamedTuple):
    """A driver's optional ``discover`` capability: browse a device, print a binding.

    ``schemes`` are the URL schemes it answers (``opcua``, ``opc.tcp``); ``run(url,
    timeout)`` returns a starting device binding as YAML text and imports its protocol
    library only when called.
    """

    schemes: tuple[str, ...]
    run: Callable[[str, float], Coroutine[Any, Any, str]]
    # the same browse as plain data (``driver``, ``connection``, ``points``, ``services`` and
    # ``hints``: what the device says about each point and method: description, unit, range,
    # argument types), from which ``citytwin discover --template --model`` writes a starting
    # template and thing model; None: this driver's discover prints a binding only
    browse: Callable[[str, float], Coroutine[Any, Any, dict[str, Any]]] | None = None


def _never(point: BaseModel) -> bool:
    return False


def _fits(point: BaseModel, use: PropertyUse) -> list[BindingFinding]:
    return []


def _as_is(connection: BaseModel, data_dir: Path, device_id: str) -> BaseModel:
    return connection


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

    ``check(point, use)`` returns every way ``point`` cannot serve ``use`` (default: none);
    ``prepare(connection, data_dir, device_id)`` returns the connection with the driver's
    own files placed under ``data_dir/device_id`` (default: unchanged; it only computes
    paths, so ``config check`` creates nothing); ``discover`` is the optional browse
    capability (None: the driver cannot discover).
    """

    connection: type[BaseModel]
    point: type[BaseModel]
    call: type[BaseModel] | None = None
    writable: Callable[[BaseModel], bool] = _never
    integer_raw: Callable[[BaseModel], bool] = _never
    float32: Callable[[BaseModel], bool] = _never
    text: Callable[[BaseModel], bool] = _never
    check: Check = _fits
    prepare: Prepare = _as_is
    discover: Discoverer | None = None


def _lazy_discover(target: str, install: str) -> Callable[[str, float], Coroutine[Any, Any, Any]]:
    """``module:function`` imported on first use, with the install hint when it is missing."""

    async def run(url: str, timeout: float) -> Any:
        module, name = target.split(":")
        try:
            function = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as exc:
            raise ImportError(f"discover needs {exc.name}: pip install {install}") from exc
        return await function(url, timeout)

    return run


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
    # the mapping itself, not a copy: many devices of one template share it, read only
    return cast(Driver, driver_class(connection, points))

def _modbus_tcp_models() -> BindingModels:
    from citytwin.drivers.modbus.binding import ModbusPoint, ModbusTcpConnection
    from citytwin.drivers.modbus.check import check_point
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
        ModbusTcpConnection, ModbusPoint, None, writable, integer_raw, float32, text, check_point
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
    from citytwin.drivers.mqtt_device.check import check_point

    def writable(point: BaseModel) -> bool:
        return isinstance(point, MqttPoint) and point.set is not None

    return BindingModels(MqttConnection, MqttPoint, MqttCall, writable, check=check_point)


def _mqtt_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.mqtt_device.binding import MqttConnection, MqttPoint

    return _build(
        "mqtt", connection, points, (MqttConnection, MqttPoint), "an",
        "citytwin.drivers.mqtt_device.driver:MqttDeviceDriver", "'aiomqtt>=2.5,<3'",
    )


def _coap_models() -> BindingModels:
    from citytwin.drivers.coap.binding import CoapCall, CoapConnection, CoapPoint
    from citytwin.drivers.coap.check import check_point

    def writable(point: BaseModel) -> bool:
        return isinstance(point, CoapPoint) and point.writable

    install = "'aiocoap>=0.4.17,<0.5' 'cbor2>=5.6,<7'"
    return BindingModels(
        CoapConnection, CoapPoint, CoapCall, writable, check=check_point,
        discover=Discoverer(
            ("coap",),
            _lazy_discover("citytwin.drivers.coap.discover:discover_coap", install),
            _lazy_discover("citytwin.drivers.coap.discover:browse_coap", install),
        ),
    )


def _coap_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.coap.binding import CoapConnection, CoapPoint

    return _build(
        "coap", connection, points, (CoapConnection, CoapPoint), "a",
        "citytwin.drivers.coap.driver:CoapDriver", "'aiocoap>=0.4.17,<0.5' 'cbor2>=5.6,<7'",
    )


def _opcua_models() -> BindingModels:
    from citytwin.drivers.opcua.binding import (
        INTEGER_TYPES,
        OpcUaCall,
        OpcUaConnection,
        OpcUaPoint,
        prepare,
    )
    from citytwin.drivers.opcua.check import check_point

    def writable(point: BaseModel) -> bool:
        return isinstance(point, OpcUaPoint) and point.writable

    def integer_raw(point: BaseModel) -> bool:
        return isinstance(point, OpcUaPoint) and point.type in INTEGER_TYPES

    def float32(point: BaseModel) -> bool:
        return isinstance(point, OpcUaPoint) and point.type == "Float"

    def text(point: BaseModel) -> bool:
        return isinstance(point, OpcUaPoint) and point.type == "String"

    return BindingModels(
        OpcUaConnection, OpcUaPoint, OpcUaCall, writable, integer_raw, float32, text,
        check=check_point, prepare=prepare,
        discover=Discoverer(
            ("opcua", "opc.tcp"),
            _lazy_discover("citytwin.drivers.opcua.discover:discover_opcua", "'asyncua>=2.1,<2.2'"),
            _lazy_discover("citytwin.drivers.opcua.discover:browse_opcua", "'asyncua>=2.1,<2.2'"),
        ),
    )


def _opcua_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.opcua.binding import OpcUaConnection, OpcUaPoint

    return _build(
        "opcua", connection, points, (OpcUaConnection, OpcUaPoint), "an",
        "citytwin.drivers.opcua.driver:OpcUaDriver", "'asyncua>=2.1,<2.2'",
    )


def _dlt645_models() -> BindingModels:
    from citytwin.drivers.dlt645.binding import Dlt645Call, Dlt645Connection, Dlt645Point

    def integer_raw(point: BaseModel) -> bool:
        return isinstance(point, Dlt645Point) and point.is_integer

    def text(point: BaseModel) -> bool:
        return isinstance(point, Dlt645Point) and point.is_text

    return BindingModels(Dlt645Connection, Dlt645Point, Dlt645Call, _never, integer_raw, _never, text)


def _dlt645_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.dlt645.binding import Dlt645Connection, Dlt645Point

    return _build(
        "dlt645", connection, points, (Dlt645Connection, Dlt645Point), "a",
        "citytwin.drivers.dlt645.driver:Dlt645Driver", "'pyserial>=3.5,<4'", requires=("serial",),
    )


def _cjt188_models() -> BindingModels:
    from citytwin.drivers.cjt188.binding import Cjt188Connection, Cjt188Point

    def writable(point: BaseModel) -> bool:
        return isinstance(point, Cjt188Point) and point.writable

    def integer_raw(point: BaseModel) -> bool:
        return isinstance(point, Cjt188Point) and point.is_integer

    def text(point: BaseModel) -> bool:
        return isinstance(point, Cjt188Point) and point.is_text

    return BindingModels(Cjt188Connection, Cjt188Point, None, writable, integer_raw, _never, text)


def _cjt188_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.cjt188.binding import Cjt188Connection, Cjt188Point

    return _build(
        "cjt188", connection, points, (Cjt188Connection, Cjt188Point), "a",
        "citytwin.drivers.cjt188.driver:Cjt188Driver", "'pyserial>=3.5,<4'", requires=("serial",),
    )


def _hj212_models() -> BindingModels:
    from citytwin.drivers.hj212.binding import Hj212Call, Hj212Connection, Hj212Point

    def writable(point: BaseModel) -> bool:
        return isinstance(point, Hj212Point) and point.set is not None

    def text(point: BaseModel) -> bool:
        return isinstance(point, Hj212Point) and point.text

    return BindingModels(Hj212Connection, Hj212Point, Hj212Call, writable, text=text)


def _hj212_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.hj212.binding import Hj212Connection, Hj212Point

    return _build(
        "hj212", connection, points, (Hj212Connection, Hj212Point), "an",
        "citytwin.drivers.hj212.driver:Hj212Driver", "citytwin-gateway",
    )


def _sl651_models() -> BindingModels:
    from citytwin.drivers.sl651.binding import Sl651Call, Sl651Connection, Sl651Point

    return BindingModels(Sl651Connection, Sl651Point, Sl651Call)


def _sl651_driver(connection: BaseModel, points: Mapping[str, BaseModel]) -> Driver:
    from citytwin.drivers.sl651.binding import Sl651Connection, Sl651Point

    return _build(
        "sl651", connection, points, (Sl651Connection, Sl651Point), "an",
        "citytwin.drivers.sl651.driver:Sl651Driver", "citytwin-gateway",
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

    return BindingModels(
        BacnetConnection, BacnetPoint, BacnetCall, writable, integer_raw, float32, text,
        discover=Discoverer(
            ("bacnet",),
            _lazy_discover("citytwin.drivers.bacnet.discover:discover_bacnet", "'bacpypes3>=0.0.110,<0.0.120'"),
            _lazy_discover("citytwin.drivers.bacnet.discover:browse_bacnet", "'bacpypes3>=0.0.110,<0.0.120'"),
        ),
    )


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
    "dlt645": (_dlt645_models, _dlt645_driver),
    "cjt188": (_cjt188_models, _cjt188_driver),
    "hj212": (_hj212_models, _hj212_driver),
    "sl651": (_sl651_models, _sl651_driver),
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
    """A new, unconnected driver ``name`` for one device and its validated point bindings.

    ``points`` is handed to the driver as is: devices of one template may share one mapping,
    so a driver reads it and never changes it (none does; copy first if one ever must)."""
    return _entry(name)[1](connection, points)


def discover_schemes() -> dict[str, str]:
    """URL scheme to the driver that discovers devices behind it, for every driver that can."""
    schemes: dict[str, str] = {}
    for name in DRIVER_NAMES:
        discover = binding_models(name).discover
        for scheme in discover.schemes if discover is not None else ():
            schemes.setdefault(scheme, name)
    return schemes


def discoverer(url: str) -> Discoverer:
    """The discover capability for ``url``'s scheme; LookupError names the schemes known."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    schemes = discover_schemes()
    if scheme not in schemes:
        known = ", ".join(f"{s}://" for s in schemes)
        raise LookupError(f"unsupported URL {url!r}; supported schemes: {known}")
    discover = binding_models(schemes[scheme]).discover
    assert discover is not None
    return discover
