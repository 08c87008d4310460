"""Driver error tree, shared by every protocol driver.

Protocol libraries raise their own exception types; each driver translates them at its
edge into these, so the gateway's retry and quality policy keys on our types alone::

    DriverError
    ├── TransportError          the link to the device is unusable: the device goes offline
    │   ├── ConnectError        could not (re)connect
    │   ├── RequestTimeout      no answer within the request timeout
    │   └── ConnectionClosed    the peer closed or the stream broke
    ├── DeviceError             the device answered, but with an error (Modbus exception code,
    │                           OPC UA bad status, CoAP error class); the link stays up
    ├── DecodeError             the answer was malformed or could not be decoded
    └── BindingError            a point binding is invalid for this device or driver
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error a driver raises."""


class TransportError(DriverError):
    """The link to the device is unusable."""


class ConnectError(TransportError):
    """A connection could not be established."""


class RequestTimeout(TransportError):
    """A request got no answer within its timeout."""


class ConnectionClosed(TransportError):
    """The peer closed the connection or the stream broke."""


class DeviceError(DriverError):
    """The device answered with an error; ``code`` is the protocol's own code when it has one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DecodeError(DriverError):
    """An answer was malformed or could not be decoded."""


class BindingError(DriverError):
    """A point binding is invalid for this driver or device."""
