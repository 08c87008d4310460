"""Config models for a device on its own (southbound) MQTT broker, its points and calls.

Imports pydantic and the stdlib-only ``pointer`` module, never the MQTT client, so that
validating a config loads no protocol library. Point models are subclassed by the gateway
(scale, offset, deadband) and inherit ``extra="forbid"`` and the validators.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from citytwin.drivers.fields import IntRange, PositiveFloat
from citytwin.drivers.mqtt_device.pointer import check_filter, check_name, parse_pointer

_URL = re.compile(r"^mqtt://(?P<host>[^/:]+)(:(?P<port>\d{1,5}))?/?$")


def _pointer(value: str | None) -> str | None:
    if value is not None:
        parse_pointer(value)
    return value


class MqttCall(BaseModel):
    """One request published to the device, answered on a reply topic by correlation id.

    ``payload`` is a JSON template: a string ``"$name"`` anywhere in it is replaced by the
    input ``name`` (a property write has the one input ``value``). The correlation id is
    placed at the connection's ``correlation`` pointer and expected at the same place in the
    reply (or as MQTT 5 correlation data). ``output`` maps output names to pointers into the
    reply; a non-null value at ``error`` in the reply fails the call with that reason.
    """

    model_config = ConfigDict(extra="forbid")

    topic: str | None = None
    """where to publish; default: the connection's ``command_topic``"""
    reply_topic: str | None = None
    """where the answer comes; default: the connection's ``reply_topic`` (none: no answer awaited)"""
    payload: Any = Field(default_factory=dict)
    output: dict[str, str] = {}
    error: str | None = "/error"
    timeout: PositiveFloat | None = None
    """seconds to wait for the reply; default: the connection's ``timeout``"""

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @field_validator("reply_topic")
    @classmethod
    def _reply_topic(cls, value: str | None) -> str | None:
        return None if value is None else check_filter(value)

    @field_validator("output")
    @classmethod
    def _outputs(cls, value: dict[str, str]) -> dict[str, str]:
        for pointer in value.values():
            parse_pointer(pointer)
        return value

    @field_validator("error")
    @classmethod
    def _error(cls, value: str | None) -> str | None:
        return _pointer(value)


class MqttConnection(BaseModel):
    """The device's broker, the topics to subscribe, and its command and reply topics."""

    model_config = ConfigDict(extra="forbid")

    url: str
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: Annotated[int, IntRange(5, 3600)] = 30
    connect_timeout: PositiveFloat = 5.0
    qos: Literal[0, 1] = 1
    subscribe: list[str] = []
    """topic filters for this device; default: every point's topic"""
    command_topic: str | None = None
    reply_topic: str | None = None
    correlation: str = "/id"
    """JSON pointer of the correlation id in commands and their replies"""
    timeout: PositiveFloat = 5.0
    """seconds to wait for a reply to a command"""

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        return {5: "5", 311: "3.1.1"}.get(value, value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        match = _URL.match(value)
        if match is None or not 1 <= int(match["port"] or 1883) <= 65535:
            raise ValueError("must look like mqtt://HOST:PORT")
        return value

    @field_validator("subscribe")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        return [check_filter(topic) for topic in value]

    @field_validator("command_topic")
    @classmethod
    def _command_topic(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @field_validator("reply_topic")
    @classmethod
    def _reply_topic(cls, value: str | None) -> str | None:
        return None if value is None else check_filter(value)

    @field_validator("correlation")
    @classmethod
    def _correlation(cls, value: str) -> str:
        if not parse_pointer(value):
            raise ValueError("the correlation pointer must name a member, not the whole payload")
        return value

    @property
    def host(self) -> str:
        match = _URL.match(self.url)
        assert match is not None
        return match["host"]

    @property
    def port(self) -> int:
        match = _URL.match(self.url)
        assert match is not None
        return int(match["port"] or 1883)


class MqttPoint(BaseModel):
    """A value the device publishes: a topic (filter) and a JSON pointer into its payload.

    ``timestamp`` points at the source time in the same payload (epoch ms or ISO 8601);
    ``map`` translates published values (keys are their JSON text, e.g. ``"open"``,
    ``"true"``, ``"1"``) into raw values; ``set`` makes the point writable by a command.
    """

    model_config = ConfigDict(extra="forbid")

    topic: str | None = None
    """none for a write-only point (an ``output``), which needs ``set``"""
    pointer: str = ""
    timestamp: str | None = None
    map: dict[str, Any] | None = None
    set: MqttCall | None = None

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else check_filter(value)

    @model_validator(mode="after")
    def _read_or_write(self) -> MqttPoint:
        if self.topic is None and self.set is None:
            raise ValueError("needs a 'topic' to read from or a 'set' command to write with")
        return self

    @field_validator("pointer", "timestamp")
    @classmethod
    def _pointers(cls, value: str | None) -> str | None:
        return _pointer(value)
