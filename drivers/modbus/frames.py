"""Sanity checks on received Modbus TCP frames, before pymodbus parses them.

pymodbus 3.16 handles a bad answer in one of two costly ways: a frame with a wrong
protocol id or length is kept in its buffer and the request waits out its timeout; a
frame whose byte count disagrees with its length makes its decoder raise inside
``data_received``, which asyncio reports as a fatal error (with a traceback) before it
drops the connection. Checking each answer's MBAP header and byte count first lets the
driver fail the request at once, with a reason.
"""

from __future__ import annotations

from typing import NamedTuple

_MBAP = 7  # transaction id, protocol id, length, unit id
_MAX_LENGTH = 254  # unit id + a 253-byte PDU


class FrameProblem(NamedTuple):
    reason: str
    desync: bool
    """True when frame boundaries are lost: the stream cannot be trusted any more."""


def frame_problem(data: bytes) -> FrameProblem | None:
    """What is wrong with the first frame in ``data``; None if nothing (yet) is.

    An incomplete frame is not a problem: more bytes may follow.
    """
    if len(data) < _MBAP + 1:
        return None
    protocol = (data[2] << 8) | data[3]
    if protocol:
        return FrameProblem(f"not a Modbus TCP answer (protocol id {protocol})", True)
    length = (data[4] << 8) | data[5]
    if not 2 <= length <= _MAX_LENGTH:
        return FrameProblem(f"not a Modbus TCP answer (length field {length})", True)
    if len(data) < 6 + length:
        return None
    function = data[_MBAP]
    pdu_length = length - 1
    if function & 0x80:
        if pdu_length != 2:
            return FrameProblem(f"exception answer of {pdu_length} bytes, expected 2", False)
        return None
    if function in (1, 2, 3, 4):
        if pdu_length < 2:
            return FrameProblem("read answer without a byte count", False)
        byte_count = data[_MBAP + 1]
        if byte_count != pdu_length - 2:
            return FrameProblem(
                f"byte count {byte_count} in an answer carrying {pdu_length - 2} bytes", False
            )
        if function in (3, 4) and byte_count % 2:
            return FrameProblem(f"odd byte count {byte_count} for registers", False)
    elif function in (5, 6, 15, 16) and pdu_length != 5:
        return FrameProblem(f"write answer of {pdu_length} bytes, expected 5", False)
    elif function == 22 and pdu_length != 7:
        return FrameProblem(f"mask write answer of {pdu_length} bytes, expected 7", False)
    return None
