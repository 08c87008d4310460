"""SenML unit names (what SDF's ``unit`` holds) to and from the UCUM codes of our models.

SDF takes its units from IANA's SenML Units registry (RFC 8428, extended by RFC 8798) and its
Secondary Units registry (RFC 8798); our models carry a display unit (``°C``) and, in the
``x-citytwin`` block, its UCUM code (``Cel``). Only the units below have a name in both; the
rest travel as a loss, never as a guess. A SenML unit whose name holds a colon is a URI unit
in SDF (the registry's note for RFC 9880): it has no UCUM code here either.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Unit(NamedTuple):
    senml: str
    ucum: str
    display: str


_TABLE: Final = (
    # RFC 8428 SenML units
    Unit("m", "m", "m"), Unit("kg", "kg", "kg"), Unit("g", "g", "g"), Unit("s", "s", "s"),
    Unit("A", "A", "A"), Unit("K", "K", "K"), Unit("cd", "cd", "cd"), Unit("mol", "mol", "mol"),
    Unit("Hz", "Hz", "Hz"), Unit("rad", "rad", "rad"), Unit("sr", "sr", "sr"), Unit("N", "N", "N"),
    Unit("Pa", "Pa", "Pa"), Unit("J", "J", "J"), Unit("W", "W", "W"), Unit("C", "C", "C"),
    Unit("V", "V", "V"), Unit("F", "F", "F"), Unit("Ohm", "Ohm", "Ω"), Unit("S", "S", "S"),
    Unit("Wb", "Wb", "Wb"), Unit("T", "T", "T"), Unit("H", "H", "H"), Unit("Cel", "Cel", "°C"),
    Unit("lm", "lm", "lm"), Unit("lx", "lx", "lx"), Unit("Bq", "Bq", "Bq"), Unit("Gy", "Gy", "Gy"),
    Unit("Sv", "Sv", "Sv"), Unit("kat", "kat", "kat"), Unit("m2", "m2", "m²"), Unit("m3", "m3", "m³"),
    Unit("l", "L", "L"), Unit("m/s", "m/s", "m/s"), Unit("m/s2", "m/s2", "m/s²"),
    Unit("m3/s", "m3/s", "m³/s"), Unit("l/s", "L/s", "L/s"), Unit("W/m2", "W/m2", "W/m²"),
    Unit("cd/m2", "cd/m2", "cd/m²"), Unit("bit", "bit", "bit"), Unit("bit/s", "bit/s", "bit/s"),
    Unit("lat", "deg", "lat"), Unit("lon", "deg", "lon"), Unit("pH", "[pH]", "pH"),
    Unit("dB", "dB", "dB"), Unit("dBW", "dB[W]", "dBW"), Unit("count", "1", "count"),
    Unit("/", "1", ""), Unit("%RH", "%", "%RH"), Unit("1/s", "/s", "1/s"),
    Unit("1/min", "/min", "1/min"), Unit("beat/min", "{beat}/min", "beat/min"),
    Unit("beats", "{beat}", "beats"), Unit("S/m", "S/m", "S/m"),
    # RFC 8798 additions to the SenML units
    Unit("B", "By", "B"), Unit("VA", "V.A", "VA"), Unit("var", "var", "var"),
    Unit("J/m", "J/m", "J/m"), Unit("kg/m3", "kg/m3", "kg/m³"), Unit("deg", "deg", "°"),
    # RFC 8798 secondary units (scaled forms of the above)
    Unit("ms", "ms", "ms"), Unit("min", "min", "min"), Unit("h", "h", "h"),
    Unit("MHz", "MHz", "MHz"), Unit("kW", "kW", "kW"), Unit("kVA", "kV.A", "kVA"),
    Unit("kvar", "kvar", "kvar"), Unit("Ah", "A.h", "Ah"), Unit("Wh", "W.h", "Wh"),
    Unit("kWh", "kW.h", "kWh"), Unit("varh", "var.h", "varh"), Unit("kvarh", "kvar.h", "kvarh"),
    Unit("kVAh", "kV.A.h", "kVAh"), Unit("Wh/km", "W.h/km", "Wh/km"), Unit("KiB", "KiBy", "KiB"),
    Unit("GB", "GBy", "GB"), Unit("Mbit/s", "Mbit/s", "Mbit/s"), Unit("B/s", "By/s", "B/s"),
    Unit("MB/s", "MBy/s", "MB/s"), Unit("mV", "mV", "mV"), Unit("mA", "mA", "mA"),
    Unit("dBm", "dB[mW]", "dBm"), Unit("ug/m3", "ug/m3", "µg/m³"), Unit("mm/h", "mm/h", "mm/h"),
    Unit("m/h", "m/h", "m/h"), Unit("ppm", "[ppm]", "ppm"), Unit("/100", "%", "%"),
    Unit("/1000", "[ppth]", "‰"), Unit("hPa", "hPa", "hPa"), Unit("mm", "mm", "mm"),
    Unit("cm", "cm", "cm"), Unit("km", "km", "km"), Unit("km/h", "km/h", "km/h"),
)

_BY_SENML: Final = {u.senml: u for u in _TABLE}
_QUALIFIED: Final = frozenset({"lat", "lon", "count", "%RH"})
"""Names that say more than their UCUM code: chosen only when the model names them."""


def from_senml(name: str) -> Unit | None:
    """The UCUM code and display symbol for a SenML unit name, or None when it has none."""
    return _BY_SENML.get(name)


def to_senml(ucum: str | None, display: str | None) -> str | None:
    """The SenML name for a model's unit, or None when SenML has none.

    The UCUM code decides; among SenML names with that code (``%`` is both ``/100`` and
    ``%RH``) the one whose display symbol the model uses wins. Without a UCUM code, a display
    unit that is itself a SenML name (``A``, ``kW``) is taken as such.
    """
    if ucum:
        matches = [u for u in _TABLE if u.ucum == ucum]
        for unit in matches:
            if display == unit.senml:
                return unit.senml
        plain = [u for u in matches if u.senml not in _QUALIFIED]
        for unit in plain:
            if display == unit.display:
                return unit.senml
        return plain[0].senml if plain else None
    if display and display in _BY_SENML:
        return display
    return None
