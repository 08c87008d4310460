"""The hub topic contract (documented in docs/hub-contract.md); the one place topics are spelled."""

from __future__ import annotations

from typing import NamedTuple


class Incoming(NamedTuple):
    kind: str  # "invoke" | "set" | "desired" | "get" | "config"
    device: str
    service: str | None


class Topics:
    def __init__(self, prefix: str, gateway_id: str) -> None:
        self.base = f"{prefix.rstrip('/')}/{gateway_id}"

    @property
    def gateway_status(self) -> str:
        return f"{self.base}/status"

    @property
    def config_desired(self) -> str:
        """A new config from the hub (admins of ``@gateway`` only; docs/operations.md)."""
        return f"{self.base}/config/desired"

    @property
    def config_reported(self) -> str:
        """The gateway's answer to a config and its active config (retained)."""
        return f"{self.base}/config/reported"

    def gateway_event(self, event: str) -> str:
        return f"{self.base}/events/{event}"

    def device_status(self, device: str) -> str:
        return f"{self.base}/{device}/status"

    def report(self, device: str) -> str:
        return f"{self.base}/{device}/properties/report"

    def event(self, device: str, event: str) -> str:
        return f"{self.base}/{device}/events/{event}"

    def value(self, device: str, prop: str) -> str:
        """One property's current value, bare and retained (with ``hub.property_topics``)."""
        return f"{self.base}/{device}/values/{prop}"

    def meta(self, device: str) -> str:
        """What a device is and where: uid, location, tags, groups, model (retained)."""
        return f"{self.base}/{device}/meta"

    def twin(self, device: str) -> str:
        return f"{self.base}/{device}/twin"

    def replies(self, device: str) -> str:
        return f"{self.base}/{device}/replies"

    def invoke(self, device: str, service: str) -> str:
        return f"{self.base}/{device}/services/{service}/invoke"

    def property_set(self, device: str) -> str:
        return f"{self.base}/{device}/properties/set"

    def desired(self, device: str) -> str:
        return f"{self.base}/{device}/twin/desired"

    def twin_get(self, device: str) -> str:
        return f"{self.base}/{device}/twin/get"

    @property
    def subscriptions(self) -> list[str]:
        return [self.invoke("+", "+"), self.property_set("+"), self.desired("+"), self.twin_get("+"),
                self.config_desired]

    def parse(self, topic: str) -> Incoming | None:
        if not topic.startswith(self.base + "/"):
            return None
        parts = topic[len(self.base) + 1 :].split("/")
        if parts == ["config", "desired"]:
            return Incoming("config", "", None)
        if len(parts) == 4 and parts[1] == "services" and parts[3] == "invoke":
            return Incoming("invoke", parts[0], parts[2])
        if len(parts) == 3 and parts[1:] == ["properties", "set"]:
            return Incoming("set", parts[0], None)
        if len(parts) == 3 and parts[1:] == ["twin", "desired"]:
            return Incoming("desired", parts[0], None)
        if len(parts) == 3 and parts[1:] == ["twin", "get"]:
            return Incoming("get", parts[0], None)
        return None
