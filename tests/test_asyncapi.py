"""docs/asyncapi.yaml is valid AsyncAPI 3.0 and says what the code does.

Validated offline against the official AsyncAPI 3.0.0 JSON Schema vendored in docs/schemas/;
its channels are compared with the topics gateway/topics.py spells and the gateway subscribes to.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry
from referencing.exceptions import NoSuchResource

from citytwin.gateway.cli.hubclient import BrokerOptions, HubSession
from citytwin.gateway.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "asyncapi.yaml"
SCHEMA = ROOT / "docs" / "schemas" / "asyncapi-3.0.0.json"
SCHEMA_SHA256 = "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626"  # @asyncapi/specs 6.11.1

P, GW, DEV, SVC, EVT = "{prefix}", "{gatewayId}", "{deviceId}", "{serviceId}", "{eventId}"

# channel -> how the code spells its topic
CODE: dict[str, Callable[[Topics], str]] = {
    "gatewayStatus": lambda t: t.gateway_status,
    "gatewayEvent": lambda t: t.gateway_event(EVT),
    "deviceStatus": lambda t: t.device_status(DEV),
    "propertiesReport": lambda t: t.report(DEV),
    "deviceEvent": lambda t: t.event(DEV, EVT),
    "twin": lambda t: t.twin(DEV),
    "deviceMeta": lambda t: t.meta(DEV),
    "propertyValue": lambda t: t.value(DEV, "{propertyId}"),
    "configDesired": lambda t: t.config_desired,
    "configReported": lambda t: t.config_reported,
    "replies": lambda t: t.replies(DEV),
    "serviceInvoke": lambda t: t.invoke(DEV, SVC),
    "propertiesSet": lambda t: t.property_set(DEV),
    "twinDesired": lambda t: t.desired(DEV),
    "twinGet": lambda t: t.twin_get(DEV),
}
TOPIC_ATTRIBUTES = {  # every Topics member that spells a topic -> its channel
    "gateway_status": "gatewayStatus", "gateway_event": "gatewayEvent", "device_status": "deviceStatus",
    "report": "propertiesReport", "event": "deviceEvent", "twin": "twin", "meta": "deviceMeta", "value": "propertyValue", "replies": "replies",
    "config_desired": "configDesired", "config_reported": "configReported",
    "invoke": "serviceInvoke", "property_set": "propertiesSet", "desired": "twinDesired", "twin_get": "twinGet",
}
NOT_TOPICS = {"base", "parse", "subscriptions"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(DOC.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _offline(uri: str) -> Any:
    raise NoSuchResource(ref=uri)  # the schema must resolve inside itself: no network in tests


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    raw = SCHEMA.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "docs/schemas/asyncapi-3.0.0.json was changed"
    schema = json.loads(raw)
    cls = jsonschema.validators.validator_for(schema)
    registry: Registry[Any] = Registry(retrieve=_offline)
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def test_document_is_valid_asyncapi_3(doc: dict[str, Any], validator: jsonschema.protocols.Validator) -> None:
    assert doc["asyncapi"] == "3.0.0"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["channels", "twin", "address"], 5),
        (["operations", "receiveInvoke", "action"], "consume"),
        (["operations", "publishTwin", "bindings", "mqtt", "qos"], 3),
        (["components", "messages", "reply", "bindings", "mqtt", "bindingVersion"], "9.9.9"),
        (["info", "unexpected"], True),
    ],
)
def test_the_schema_check_catches_broken_documents(
    doc: dict[str, Any], validator: jsonschema.protocols.Validator, path: list[str], value: Any
) -> None:
    broken = copy.deepcopy(doc)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert list(validator.iter_errors(broken))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_reference_resolves_and_every_address_parameter_is_declared(doc: dict[str, Any]) -> None:
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
            node = node[part]
    for name, channel in doc["channels"].items():
        used = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert used == set(channel.get("parameters", {})), name
    for name, operation in doc["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), f"{name}: {message} is not on {channel}"


def test_every_topic_the_code_spells_is_a_documented_channel(doc: dict[str, Any]) -> None:
    members = {name for name in vars(Topics) if not name.startswith("_")} - NOT_TOPICS
    undocumented = members - set(TOPIC_ATTRIBUTES)
    assert not undocumented, f"gateway/topics.py spells topics missing from docs/asyncapi.yaml: {undocumented}"
    assert set(CODE) | {"operatorReplies"} == set(doc["channels"])


@pytest.mark.parametrize("channel", sorted(CODE))
def test_channel_address_matches_the_code(doc: dict[str, Any], channel: str) -> None:
    assert doc["channels"][channel]["address"] == CODE[channel](Topics(P, GW))


def test_operator_reply_channel_matches_the_hub_cli(doc: dict[str, Any]) -> None:
    session = HubSession(BrokerOptions(prefix=P, client_id="CLIENT"))
    assert doc["channels"]["operatorReplies"]["address"] == session.reply_topic.replace("CLIENT", "{clientId}")


def test_receive_operations_are_what_the_gateway_subscribes_to(doc: dict[str, Any]) -> None:
    """The gateway subscribes to exactly the channels the document says it receives on."""
    topics = Topics("citytwin/v1", "gw-1")
    documented = set()
    for operation in doc["operations"].values():
        if operation["action"] != "receive":
            continue
        address = doc["channels"][operation["channel"]["$ref"].rsplit("/", 1)[1]]["address"]
        wildcard = address.replace(P, "citytwin/v1").replace(GW, "gw-1")
        documented.add(re.sub(r"\{\w+\}", "+", wildcard))
    assert documented == set(topics.subscriptions)


def test_send_operations_match_the_contract_table(doc: dict[str, Any]) -> None:
    """Retained state topics and QoS as docs/hub-contract.md states them."""
    retained = {"gatewayStatus", "deviceStatus", "twin", "deviceMeta", "configReported", "propertyValue"}
    for operation in doc["operations"].values():
        if operation["action"] != "send":
            continue
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        mqtt = operation["bindings"]["mqtt"]
        assert mqtt["retain"] is (channel in retained), channel
        assert mqtt["qos"] == 1, channel
