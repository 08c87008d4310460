"""The bundled model library: JSON documents shipped as package data in ``standard/``.

Read through importlib.resources so it works from a wheel or a zip as well as a checkout.
Parsed models are cached (they are immutable); documents are re-read so callers may edit them.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from citytwin.thingmodels.errors import Issue, ModelError
from citytwin.thingmodels.loader import load_model_json
from citytwin.thingmodels.types import ThingModel

_SUFFIX = ".json"


def _folder() -> Traversable:
    return resources.files("citytwin.thingmodels").joinpath("standard")


@functools.cache
def _names() -> tuple[str, ...]:
    return tuple(
        sorted(
            entry.name.removesuffix(_SUFFIX)
            for entry in _folder().iterdir()
            if entry.name.endswith(_SUFFIX) and entry.is_file()
        )
    )


def library_names() -> list[str]:
    """Names of the bundled models, sorted (file stems, e.g. ``pump_station``)."""
    return list(_names())


def library_text(name: str) -> str:
    """The named model's document as shipped; ``KeyError`` if there is none."""
    if name not in _names():
        raise KeyError(f"no library model {name!r}; available: {', '.join(_names())}")
    return _folder().joinpath(name + _SUFFIX).read_text(encoding="utf-8")


def library_document(name: str) -> dict[str, Any]:
    """A fresh copy of the named model's JSON document; ``KeyError`` if there is none."""
    doc = json.loads(library_text(name))
    if not isinstance(doc, dict):
        raise ModelError(library_source(name), [Issue("", "a thing model must be a JSON object")])
    return doc


@functools.cache
def load_library_model(name: str) -> ThingModel:
    """The named bundled model, parsed once; ``KeyError`` if there is none."""
    return load_model_json(library_text(name), library_source(name))


def library_source(name: str) -> str:
    return f"citytwin.thingmodels/standard/{name}{_SUFFIX}"
