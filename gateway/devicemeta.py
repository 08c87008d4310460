"""A device's identity and place, as published on ``{p}/{gw}/{dev}/meta`` and put in TDs.

A city twin locates every sensor (a ponding point, a river section) and joins it to the
city's asset register by the asset's unified identifier. The gateway does not interpret
either; it carries them from the config (``uid``, ``location``, ``tags``; gateway/config.py)
to the hub and to WoT consumers, the same document in both.
"""

from __future__ import annotations

from typing import Any

from citytwin.gateway.config import DeviceConfig

# JSON-LD vocabularies for the Thing Description: W3C's basic geo vocabulary for the point,
# schema.org for the identifier, the address and the floor
TD_CONTEXT = {"geo": "http://www.w3.org/2003/01/geo/wgs84_pos#", "schema": "https://schema.org/"}


def meta_document(config: DeviceConfig, product_key: str, ts: int) -> dict[str, Any]:
    """The retained meta document: only what is configured, plus what the device is."""
    doc: dict[str, Any] = {"ts": ts, "model": product_key}
    if config.uid is not None:
        doc["uid"] = config.uid
    if config.template is not None:
        doc["template"] = config.template
    if config.groups:
        doc["groups"] = list(config.groups)
    if config.location is not None:
        doc["location"] = config.location.model_dump(exclude_none=True)
    if config.tags:
        doc["tags"] = dict(config.tags)
    return doc


def td_annotations(config: DeviceConfig) -> dict[str, Any]:
    """Top-level Thing Description members for a device's identity and place (merge them into
    the TD and add ``TD_CONTEXT`` to its ``@context``); empty when none is configured."""
    out: dict[str, Any] = {}
    if config.uid is not None:
        out["schema:identifier"] = config.uid
    loc = config.location
    if loc is not None:
        out["geo:lat"] = loc.latitude
        out["geo:long"] = loc.longitude
        if loc.altitude is not None:
            out["geo:alt"] = loc.altitude
        out["citytwin:crs"] = loc.crs
        if loc.address is not None:
            out["schema:address"] = loc.address
        if loc.floor is not None:
            out["schema:floorLevel"] = loc.floor
    if config.tags:
        out["citytwin:tags"] = dict(config.tags)
    return out
