"""Which thing-model format a document is written in, recognised from its content.

``citytwin model validate`` and ``convert`` name the detected format in every message and
refuse an unknown one as such, never as invalid TSL. Each importer and exporter lives in
its own module (``tsl``, ``wot``, ``sdf``, ``iotda``, ``onenet``); this module only tells
them apart, so the rules for telling are in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class Format(enum.StrEnum):
    CITYTWIN = "citytwin"  # our own model document (TSL-shaped, with profile)
    TSL = "tsl"  # Alibaba TSL (and its module documents, with functionBlockId)
    WOT_TM = "wot-tm"  # W3C WoT Thing Model (@type contains tm:ThingModel)
    WOT_TD = "wot-td"  # W3C WoT Thing Description (@context and no tm:ThingModel type)
    SDF = "sdf"  # OneDM Semantic Definition Format, RFC 9880
    IOTDA = "iotda"  # Huawei Cloud IoTDA product model
    ONENET = "onenet"  # China Mobile OneNET thing model


def _types(doc: Mapping[str, Any]) -> list[Any]:
    value = doc.get("@type")
    if isinstance(value, list):
        return value
    return [value] if value is not None else []


def detect_format(doc: Any) -> Format | None:
    """The format of a parsed document, or None when it is none we know."""
    if not isinstance(doc, Mapping):
        return None
    if "tm:ThingModel" in _types(doc):
        return Format.WOT_TM  # even without @context: the TM checks then say it is missing
    if "@context" in doc:
        return Format.WOT_TD  # a TM without the tm:ThingModel type is told so by the TD checks
    if "securityDefinitions" in doc or ("profile" not in doc and "schema" not in doc and any(
            isinstance(doc.get(k), Mapping) for k in ("properties", "actions", "events"))):
        return Format.WOT_TD  # WoT-shaped without @context (TSL lists its features): the TD checks say what is missing
    if any(key in doc for key in ("sdfObject", "sdfThing", "sdfData", "sdfProperty", "sdfAction", "sdfEvent")):
        return Format.SDF
    if any(isinstance(key, str) and key.startswith("odm") for key in doc):
        return Format.SDF  # a pre-RFC OneDM file: the SDF importer refuses its odm* keywords by name
    if "service_capabilities" in doc or ("services" in doc and "device_type" in doc):
        return Format.IOTDA
    data = doc.get("data")
    body: Mapping[str, Any] = data if isinstance(data, Mapping) and "properties" not in doc else doc
    if any(
        isinstance(p, Mapping) and ("functionType" in p or "functionMode" in p)
        for section in ("properties", "events", "services")
        for p in _as_list(body.get(section))
    ):
        return Format.ONENET  # OneNET marks every feature with functionType u/s and functionMode
    if "modules" in doc or "x-citytwin" in doc:
        return Format.CITYTWIN
    if "profile" in doc or "functionBlockId" in doc or ("schema" in doc and "properties" in doc):
        return Format.TSL
    if any(
        isinstance(p, Mapping) and "identifier" in p and "dataType" in p
        for section in ("properties", "events", "services")
        for p in _as_list(doc.get(section))
    ):
        return Format.TSL  # TSL-shaped but without a profile: the TSL checks say what is missing
    return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
