"""Round-trip checking for the format bridges: every difference between a model and the same
model after export and re-import must sit under a pointer the loss report names.

Each model is flattened to leaves keyed by their pointer in our document (module features as
if inline, as ``interchange.feature_pointers`` addresses them), so a difference is a pointer
too and "the loss report is the only difference" is a set comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from citytwin.thingmodels.interchange import feature_pointers
from citytwin.thingmodels.tsl import Loss, data_type_doc
from citytwin.thingmodels.types import Event, Param, Property, Service, ThingModel


def _leaves(node: Any, at: str, out: dict[str, Any]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            _leaves(value, f"{at}/{key}", out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _leaves(value, f"{at}/{index}", out)
    else:
        out[at] = node


def _params(params: Iterable[Param]) -> list[dict[str, Any]]:
    return [{"identifier": p.identifier, "name": p.name, "dataType": data_type_doc(p.data_type), "x-citytwin": dict(p.ext)}
            for p in params]


def _feature(feature: Property | Event | Service) -> dict[str, Any]:
    doc: dict[str, Any] = {"identifier": feature.identifier.rsplit(":", 1)[-1], "name": feature.name,
                           "required": feature.required, "desc": feature.description, "x-citytwin": dict(feature.ext)}
    if isinstance(feature, Property):
        doc.update(accessMode=feature.access_mode.value, dataType=data_type_doc(feature.data_type))
    elif isinstance(feature, Event):
        doc.update(type=feature.type.value, outputData=_params(feature.output.values()))
    else:
        doc.update(callType=feature.call_type.value, inputData=_params(feature.inputs.values()),
                   outputData=_params(feature.outputs.values()))
    return doc


def flatten(model: ThingModel, rename: Callable[[str, str], str] | None = None) -> dict[str, Any]:
    """Pointer -> leaf value for everything the model says."""
    out: dict[str, Any] = {}
    _leaves({"productKey": model.product_key, "version": model.profile.version}, "/profile", out)
    _leaves(dict(model.ext), "/x-citytwin", out)
    for index, module in enumerate(model.modules.values()):
        _leaves({"identifier": module.identifier, "name": module.name, "desc": module.description,
                 "model": module.ref, "x-citytwin": dict(module.ext)}, f"/modules/{index}", out)
    pointers = feature_pointers(model)
    sections = {"properties": model.properties, "events": model.events, "services": model.services}
    for (section, key), at in pointers.items():
        _leaves(_feature(sections[section][key]), at, out)  # type: ignore[arg-type]
    return out


def _same_number(at: str, old: Any, new: Any) -> bool:
    if at.rsplit("/", 1)[-1] not in ("min", "max", "step", "length", "size"):
        return False
    try:
        return float(old) == float(new)
    except (TypeError, ValueError):
        return False


def unexplained(
    before: ThingModel, after: ThingModel, losses: Iterable[Loss], allowed: Callable[[str, Any, Any], bool] | None = None
) -> list[str]:
    """Differences no loss (nor a documented normalisation ``allowed``) accounts for."""
    a, b = flatten(before), flatten(after)
    covered = [loss.pointer for loss in losses]
    found = []
    for at in sorted(set(a) | set(b)):
        old, new = a.get(at), b.get(at)
        if old == new or _same_number(at, old, new) or (old is None and new in ("", False, {}, [])) or (new is None and old in ("", False)):
            continue
        if any(at == p or at.startswith(p + "/") for p in covered):
            continue
        if allowed is not None and allowed(at, old, new):
            continue
        found.append(f"{at}: {old!r} -> {new!r}")
    return found


_ODD: list[Any] = [None, 0, -1, 1.5, "", "x", [], {}, [1, "a"], {"a": 1}, True, 2**40, "#/nope", "pg:#/x",
                   {"sdfRef": "#/sdfData"}]


def mutations(docs: list[Any], count: int, seed: int) -> Iterable[Any]:
    """``count`` copies of the documents, each with one to three values replaced by odd ones
    (or keys deleted): deterministic, so a crash it finds is reproducible."""
    import copy
    import random

    rnd = random.Random(seed)

    def places(node: Any, at: tuple[Any, ...] = ()) -> Iterable[tuple[Any, ...]]:
        yield at
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            yield from places(value, (*at, key))

    for _ in range(count):
        doc = copy.deepcopy(rnd.choice(docs))
        spots = list(places(doc))[1:]
        for _ in range(rnd.randint(1, 3)):
            if not spots:
                break
            spot = rnd.choice(spots)
            node = doc
            try:
                for key in spot[:-1]:
                    node = node[key]
                if rnd.random() < 0.3 and isinstance(node, dict):
                    del node[spot[-1]]
                else:
                    node[spot[-1]] = copy.deepcopy(rnd.choice(_ODD))
            except (KeyError, IndexError, TypeError):
                pass  # an earlier change moved the place
        yield doc
