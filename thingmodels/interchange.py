"""What every foreign-format bridge (SDF, IoTDA, OneNET) shares: names made TSL-safe with a
loss when they change, and where each feature of a model sits in our document.

Exporters name a loss by its JSON pointer in our document; a module's features are pointed at
as if the module were written inline (``/modules/0/properties/3``), also when it names a
library model, so every feature has one address whichever way its module was written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from citytwin.thingmodels.datatypes import IDENTIFIER
from citytwin.thingmodels.errors import pointer
from citytwin.thingmodels.loader import MODULE_IDENTIFIER, PRODUCT_KEY, RESERVED
from citytwin.thingmodels.tsl import Loss
from citytwin.thingmodels.types import MODULE_SEPARATOR, DataType, Kind, ThingModel, Written

SECTIONS: Final = ("properties", "events", "services")


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (for lenient importers)."""
    return value if isinstance(value, Mapping) else {}


def listing(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def tsl_identifier(name: str, at: str, losses: list[Loss], feature: bool = True, taken: set[str] | None = None) -> str:
    """``name`` if TSL takes it as an identifier, else a close one (and a loss saying so)."""
    fixed = name
    if not IDENTIFIER.fullmatch(fixed) or (feature and fixed in RESERVED):
        fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not fixed[:1].isalpha():
            fixed = "x_" + fixed
        fixed = fixed[:50]
        if feature and fixed in RESERVED:
            fixed += "_"
    if taken is not None:
        base, n = fixed, 2
        while fixed in taken:
            suffix = f"_{n}"
            fixed, n = base[: 50 - len(suffix)] + suffix, n + 1
        taken.add(fixed)
    if fixed != name:
        losses.append(Loss(at, f"name {name!r} is not a TSL identifier; imported as {fixed!r}"))
    return fixed


def module_identifier(name: str, at: str, losses: list[Loss], taken: set[str]) -> str:
    """A TSL module identifier (1-30 of letters, digits, '_') for ``name``."""
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)[:30] or "module"
    base, n = fixed, 2
    while fixed in taken:
        suffix = f"_{n}"
        fixed, n = base[: 30 - len(suffix)] + suffix, n + 1
    taken.add(fixed)
    if fixed != name or not MODULE_IDENTIFIER.fullmatch(name):
        losses.append(Loss(at, f"name {name!r} is not a TSL module identifier; imported as {fixed!r}"))
    return fixed


def product_key(text: str) -> str:
    """A valid product key made from ``text`` (a title, a namespace and a name...)."""
    fixed = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip("._-")[:64]
    return fixed if PRODUCT_KEY.fullmatch(fixed) else "imported"


def _own(model: ThingModel) -> tuple[list[str], list[str], list[str]]:
    properties, events, services = model.own()
    return list(properties), list(events), list(services)


def feature_pointers(model: ThingModel) -> dict[tuple[str, str], str]:
    """(section, qualified identifier) -> the feature's pointer in our document."""
    found: dict[tuple[str, str], str] = {}
    for section, features in zip(SECTIONS, _own(model), strict=True):
        for index, key in enumerate(features):
            found[(section, key)] = f"/{section}/{index}"
    for m_index, module in enumerate(model.modules.values()):
        for section, features in zip(SECTIONS, _own(module.model), strict=True):
            for index, key in enumerate(features):
                found[(section, f"{module.identifier}{MODULE_SEPARATOR}{key}")] = f"/modules/{m_index}/{section}/{index}"
    return found


_SPEC_KEYS: Final = {
    Kind.INT: frozenset({"min", "max", "step", "unit", "unitName"}),
    Kind.FLOAT: frozenset({"min", "max", "step", "unit", "unitName"}),
    Kind.DOUBLE: frozenset({"min", "max", "step", "unit", "unitName"}),
    Kind.TEXT: frozenset({"length"}),
    Kind.DATE: frozenset(),
    Kind.ARRAY: frozenset({"size", "item"}),
}


def verbatim_losses(shape: Written, at: str, target: str, losses: list[Loss], skip: tuple[str, ...] = ()) -> None:
    """Keys a TSL source had that the model keeps only verbatim (a vendor's own, Alibaba's
    ``method``...): the target format has no place for them."""
    for key in shape.extra:
        if key not in skip:
            losses.append(Loss(pointer(at, key), f"{key!r} (kept verbatim from the source) has no {target} place"))


def data_type_losses(dt: DataType, type_at: str, target: str, losses: list[Loss]) -> None:
    """The verbatim keys of a data type and of its specs (``precision``...), recursively."""
    verbatim_losses(dt.written, type_at, target, losses)
    known = _SPEC_KEYS.get(dt.type)
    if known is not None:
        for key in dt.written.literals:
            if key not in known:
                losses.append(Loss(pointer(pointer(type_at, "specs"), key), f"spec {key!r} has no {target} place"))
    if dt.item is not None:
        data_type_losses(dt.item, pointer(pointer(type_at, "specs"), "item"), target, losses)
