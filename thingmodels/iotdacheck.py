"""The IoTDA product-model rules ``citytwin model validate`` checks (and every IoTDA export
meets): services with unique ``service_id`` of 1-64 characters; properties, commands and
events at most 500 per service, each named, names unique in the service; ``data_type`` one
of IoTDA's types; ``method`` one of R, RW, RE, RWE, W, WE; numeric limits numbers or numeric
strings. docs/thing-models.md says where each rule comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from citytwin.thingmodels.errors import Issue, pointer
from citytwin.thingmodels.interchange import listing
from citytwin.thingmodels.iotda import IOTDA_TYPES, number_of

METHODS: Final = ("R", "RW", "RE", "RWE", "W", "WE")
MAX_ENTRIES: Final = 500
_NAME_LIMIT: Final = 64


def check_iotda(doc: Any) -> list[Issue]:
    """The IoTDA product-model rules docs/thing-models.md cites, each as an ``iotda-shape`` issue."""
    issues: list[Issue] = []

    def fail(at: str, message: str) -> None:
        issues.append(Issue(at, message, "iotda-shape"))

    if not isinstance(doc, Mapping):
        return [Issue("", "an IoTDA product model must be a JSON object", "iotda-shape")]
    services = doc.get("service_capabilities")
    if not isinstance(services, list) or not services:
        fail("/service_capabilities", "service_capabilities must be a non-empty array")
        return issues
    seen_services: set[str] = set()
    for index, service in enumerate(services):
        at = f"/service_capabilities/{index}"
        if not isinstance(service, Mapping):
            fail(at, "a service must be an object")
            continue
        sid = service.get("service_id")
        if not isinstance(sid, str) or not 1 <= len(sid) <= _NAME_LIMIT:
            fail(pointer(at, "service_id"), f"service_id must be 1-{_NAME_LIMIT} characters")
        elif sid in seen_services:
            fail(pointer(at, "service_id"), f"service_id {sid!r} is used twice in the product")
        else:
            seen_services.add(sid)
        for section, key in (("properties", "property_name"), ("commands", "command_name"), ("events", "event_type")):
            entries = service.get(section, [])
            if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
                fail(pointer(at, section), f"{section} must be an array of at most {MAX_ENTRIES}")
                continue
            names: set[str] = set()
            for e_index, entry in enumerate(entries):
                e_at = pointer(pointer(at, section), e_index)
                if not isinstance(entry, Mapping) or not isinstance(entry.get(key), str) or not entry[key]:
                    fail(e_at, f"each of {section} needs a {key}")
                    continue
                if entry[key] in names:
                    fail(pointer(e_at, key), f"{key} {entry[key]!r} is used twice in the service")
                names.add(entry[key])
                if section == "properties":
                    _check_field(entry, e_at, fail)
                    if entry.get("method") not in METHODS:
                        fail(pointer(e_at, "method"), f"method must be one of {', '.join(METHODS)}")
                for p_index, para in _paras_of(entry, section):
                    p_at = pointer(pointer(e_at, "paras") if p_index[0] < 0 else
                                   pointer(pointer(pointer(e_at, "responses"), p_index[0]), "paras"), p_index[1])
                    if not isinstance(para, Mapping) or not isinstance(para.get("para_name"), str) or not para["para_name"]:
                        fail(p_at, "each parameter needs a para_name")
                    else:
                        _check_field(para, p_at, fail)
    return issues


def _paras_of(entry: Mapping[str, Any], section: str) -> Iterator[tuple[tuple[int, int], Any]]:
    if section == "properties":
        return
    for index, para in enumerate(listing(entry.get("paras"))):
        yield (-1, index), para
    for r_index, response in enumerate(listing(entry.get("responses")) if section == "commands" else []):
        if isinstance(response, Mapping):
            for index, para in enumerate(listing(response.get("paras"))):
                yield (r_index, index), para


def _check_field(entry: Mapping[str, Any], at: str, fail: Callable[[str, str], None]) -> None:
    if entry.get("data_type") not in IOTDA_TYPES:
        fail(pointer(at, "data_type"), f"data_type must be one of {', '.join(IOTDA_TYPES)}")
    for key in ("min", "max"):
        if key in entry and entry[key] is not None and number_of(entry[key]) is None:
            fail(pointer(at, key), f"{key} must be a number (or a numeric string)")
    if "max_length" in entry and entry["max_length"] is not None and (
        not isinstance(entry["max_length"], int) or isinstance(entry["max_length"], bool) or entry["max_length"] < 0
    ):
        fail(pointer(at, "max_length"), "max_length must be a non-negative integer")
