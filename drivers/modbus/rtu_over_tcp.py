"""Modbus RTU framing over a TCP socket (driver ``modbus-rtu-over-tcp``).

Serial device servers in "transparent" or "raw TCP" mode pass the bytes of a TCP
connection to an RS-485 line unchanged, so the gateway must send RTU frames (unit id,
PDU, CRC) instead of Modbus TCP's MBAP header. pymodbus 3.16's TCP client takes the RTU
framer for this (``framer=FramerType.RTU``); it checks each answer's CRC and unit id, so
the MBAP screening of the TCP driver does not apply. Everything else is the TCP driver's.
"""

from __future__ import annotations

from pymodbus.framer import FramerType

from citytwin.drivers.modbus.binding import ModbusLink, ModbusRtuOverTcpConnection
from citytwin.drivers.modbus.tcp import ModbusTcpDriver


class ModbusRtuOverTcpDriver(ModbusTcpDriver):
    """One device (one unit id) behind a serial device server, reached over TCP."""

    _framer = FramerType.RTU

    @staticmethod
    def _describe(connection: ModbusLink) -> str:
        assert isinstance(connection, ModbusRtuOverTcpConnection)
        return f"{connection.host}:{connection.port} unit {connection.unit} (RTU over TCP)"

    def _on_packet(self, generation: int, sending: bool, data: bytes) -> bytes:
        return data  # RTU frames are checked by pymodbus (CRC, unit id)
