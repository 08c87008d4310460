"""Who may command what: roles granted per operator, device (or group) and service.

Deny by default: a command is allowed only when a grant names its operator (or ``*`` for
any identified operator, or the ``anonymous`` role for commands naming nobody), covers the
device and the service or property, and gives a role high enough for the action.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from citytwin.gateway.config import AccessSection

RANK = {"none": 0, "viewer": 1, "operator": 2, "admin": 3}
NEEDED = {"get": "viewer", "invoke": "operator", "set": "operator", "desired": "admin"}


class Access:
    def __init__(self, config: AccessSection, device_groups: Mapping[str, Iterable[str]]) -> None:
        self.config = config
        # device id -> the groups it belongs to
        self.groups = {device: set(groups) for device, groups in device_groups.items()}

    def identify(self, user_property: str | None, payload_operator: object) -> str | None:
        sources = self.config.identity
        if "user_property" in sources and user_property:
            return user_property
        if "payload" in sources and isinstance(payload_operator, str) and payload_operator:
            return payload_operator
        return None

    def check(self, operator: str | None, device: str, action: str, targets: Iterable[str]) -> str | None:
        """None when allowed, else why not, as a sentence (for the reply and the audit log)."""
        needed = RANK[NEEDED[action]]
        for target in targets:
            if self._role(operator, device, target) < needed:
                return denial(operator, device, action, target, self.config.anonymous)
        return None

    def _role(self, operator: str | None, device: str, target: str) -> int:
        best = RANK[self.config.anonymous] if operator is None else 0
        if operator is None:
            return best
        groups = self.groups.get(device, set())
        for grant in self.config.grants:
            if "*" not in grant.operators and operator not in grant.operators:
                continue
            if not any(d == "*" or d == device or (d.startswith("group:") and d[6:] in groups)
                       for d in grant.devices):
                continue
            if "*" not in grant.services and target not in grant.services:
                continue
            best = max(best, RANK[grant.role])
        return best


def denial(operator: str | None, device: str, action: str, target: str, anonymous: str = "none") -> str:
    """``operator 'control-room' may not change the desired state of …``: what was refused,
    and what it takes, in words an operator reads at a glance."""
    who = f"operator {operator!r}" if operator else "a command that names no operator"
    what = {
        "get": f"read the twin of device {device!r}",
        "invoke": f"invoke service {target!r} on device {device!r}",
        "set": f"set property {target!r} on device {device!r}",
        "desired": f"change the desired state of device {device!r} (property {target!r})",
    }.get(action, f"{action} {target!r} on device {device!r}")
    role = NEEDED.get(action, "admin")
    if operator:
        return f"{who} may not {what}: that needs the {role} role, and no access grant gives it (deny by default)"
    return (f"{who} may not {what}: that needs the {role} role, and commands naming no operator "
            f"have the role {anonymous!r} (access.anonymous)")
