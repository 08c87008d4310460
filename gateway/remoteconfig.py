"""Configuration from the hub: ``{p}/{gw}/config/desired`` validated, applied, answered.

A city changes a fleet from its hub, not by editing files on a thousand boxes; but a hub
account must not be able to take a gateway over. So:

- only an operator granted ``admin`` on the target ``"@gateway"`` may send a config (a grant
  on ``"*"`` devices does not cover the gateway itself: deny by default);
- the config is validated exactly like a local file (templates, inventories, model checks),
  with the sections the local file locks (``locked:``; ``gateway`` and ``locked`` always)
  taken from the local file: a config that changes one is refused, naming it;
- it is applied through the reload path (added, removed and changed devices only; the
  outbox, twins and hub link are untouched), and if the devices it added or changed are not
  all online within ``remote_config.rollback_after`` seconds the previous config is applied
  again and the answer says ``rolled_back`` and why;
- the answer, and the active config (secrets masked, locked sections named in ``locked`` but
  their contents withheld), is retained on ``{p}/{gw}/config/reported``; every attempt is in
  the audit chain; the last good config is kept in the data directory and used again at
  restart (``restore``), until a local reload (SIGHUP, POST /reload) makes the local file win
  again;
- with ``remote_config.enabled: false`` the gateway shares no config at all: config/reported
  carries only ``{"enabled": false, ...}`` (see ``RemoteConfig.state``) and the last good
  config from the hub is not used at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from citytwin.gateway.bootstrap import compile_checked, resolve_paths
from citytwin.gateway.config import (
    AccessSection,
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    parse_document,
)
from citytwin.gateway.devicespec import DeviceSpec
from citytwin.gateway.hublink import Received, now_ms
from citytwin.gateway.jsonbytes import dumps
from citytwin.gateway.yamlsrc import YamlSyntaxError, load_data, load_yaml

if TYPE_CHECKING:
    from citytwin.gateway.app import Gateway

log = logging.getLogger("citytwin.gateway.remoteconfig")

LAST_GOOD = "remote-config.json"
GATEWAY_TARGET = "@gateway"
ALWAYS_LOCKED = ("gateway", "locked")
_SECRETS = frozenset({"password", "secret"})


@dataclass(slots=True)
class Active:
    """The config the hub sent that is running (and is kept as the last good one)."""

    version: int
    text: str
    files: dict[str, str] = field(default_factory=dict)  # inventory files sent with it, by name
    operator: str | None = None
    ts: int = 0


class Repeated(Exception):
    pass


class Refused(Exception):
    def __init__(self, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.errors = errors or [{"path": "", "message": message}]


def authorize(access: AccessSection, operator: str | None) -> str | None:
    """None when ``operator`` may configure the gateway, else why not."""
    if operator is not None:
        for grant in access.grants:
            if (GATEWAY_TARGET in grant.devices and grant.role == "admin"
                    and ("*" in grant.operators or operator in grant.operators)):
                return None
    who = operator or "an unidentified operator"
    return f"{who} may not configure the gateway (needs role admin on {GATEWAY_TARGET!r}; deny by default)"


def locked_sections(local: dict[str, Any]) -> set[str]:
    named = local.get("locked")
    return set(ALWAYS_LOCKED) | ({n for n in named if isinstance(n, str)} if isinstance(named, list) else set())


def build(text: str, files: dict[str, str], source: str, local_path: Path) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    """Validate a config from the hub as a local file, with the local file's locked sections."""
    local = load_yaml(local_path.read_text(encoding="utf-8"), str(local_path)).data
    local = local if isinstance(local, dict) else {}
    try:
        doc = load_yaml(text, source)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigIssue(source=source, line=exc.line, path="", message=exc.message)]) from None
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(source=source, line=1, path="", message="must be a mapping")])
    locked = locked_sections(local)
    issues = [ConfigIssue(source=source, line=doc.line_of((name,)), path=name,
                          message="locked by the gateway's local config: a config from the hub may not change it")
              for name in sorted(locked) if name in doc.data and doc.data[name] != local.get(name)]
    if issues:
        raise ConfigError(issues)
    merged = {k: v for k, v in doc.data.items() if k not in locked}
    merged.update({k: local[k] for k in locked if k in local})
    doc.data = merged
    base = local_path.parent
    config, fleet = parse_document(doc, base, files)
    config, specs = compile_checked(config, fleet, base)
    resolve_paths(config, specs, base)
    return config, specs


def restore(config_path: Path, config: GatewayConfig, specs: dict[str, DeviceSpec]) -> tuple[
        GatewayConfig, dict[str, DeviceSpec], Active | None]:
    """At start: the last good config from the hub, if there is one and it still validates
    against the local file; else the local config (and the reason is logged)."""
    path = Path(config.gateway.data_dir) / LAST_GOOD
    if not config.remote_config.enabled:
        # the local file turned remote configuration off: it is the config, as after a local
        # reload (a hub config kept from before must not switch it back on at the next start)
        if path.exists():
            log.warning("remote_config.enabled is false in %s: the config the hub sent before is not used "
                        "(%s removed)", config_path, path)
            path.unlink(missing_ok=True)
        return config, specs, None
    try:
        raw = orjson.loads(path.read_bytes())
        active = Active(int(raw["version"]), str(raw["text"]), dict(raw.get("files", {})), raw.get("operator"),
                        int(raw.get("ts", 0)))
    except FileNotFoundError:
        return config, specs, None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.error("%s: unreadable (%s); starting from the local config", path, exc)
        return config, specs, None
    try:
        remote_config, remote_specs = build(active.text, active.files, f"hub config v{active.version}", config_path)
    except ConfigError as exc:
        log.error("the last good config from the hub (version %d) no longer validates with %s; starting from "
                  "the local config: %s", active.version, config_path, "; ".join(str(i) for i in exc.issues))
        return config, specs, None
    log.info("starting from the config the hub sent (version %d, by %s)", active.version, active.operator)
    return remote_config, remote_specs, active


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "********" if k in _SECRETS and v is not None else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def shown(text: str, locked: Iterable[str] | None = None) -> Any:
    """A config as the hub may see it: ``locked`` sections (default: those the text itself
    locks) left out, secrets masked."""
    try:
        data = load_data(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    hidden = locked_sections(data) if locked is None else set(locked)
    return _masked({k: v for k, v in data.items() if k not in hidden})


def digest(text: str, files: dict[str, str]) -> str:
    h = hashlib.sha256(text.encode())
    for name in sorted(files):
        h.update(b"\0" + name.encode() + b"\0" + files[name].encode())
    return h.hexdigest()[:16]


class RemoteConfig:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.active: Active | None = None  # None: the local file is the config
        self.last: dict[str, Any] = {}  # the answer to the last config/desired
        self._lock = asyncio.Lock()

    @property
    def _store(self) -> Path:
        return Path(self.gateway.config.gateway.data_dir) / LAST_GOOD

    def handle(self, message: Received) -> bool:
        """Take config/desired messages (True); leave everything else to the command relay."""
        if message.topic != self.gateway.hub.topics.config_desired:
            return False
        self.gateway.tasks.spawn(self._desired(message), "remote-config")
        return True

    def forget(self) -> None:
        """The local file is the config again (a local reload)."""
        if self.active is not None:
            log.info("a local reload replaces the config the hub sent (version %d)", self.active.version)
        self.active = None
        self._store.unlink(missing_ok=True)
        self.publish_state()

    def publish_state(self) -> None:
        # rendered when published, not here: at start-up the whole config is parsed again for
        # it, which is better done once the devices are polling
        self.gateway.hub.send_state(self.gateway.hub.topics.config_reported, lambda: dumps(self.state()))

    def state(self) -> dict[str, Any]:
        """The last answer and the active config (for ``citytwin hub config get|diff``).

        ``locked`` names every section the hub may not change (the running config's, which
        are the local file's): an operator sees they exist and are locked, and ``hub config
        diff`` does not count them as differences; their contents never leave the box.

        With ``remote_config.enabled: false`` the document is an explicit ``"enabled":
        false`` (and the answer to the last refused push), with no config, inventory,
        digest or locked list. Explicit rather than no document at all, because that is what
        a hub operator can act on: ``hub config get`` says "disabled" instead of "not
        running, or too old", a push is refused at once (and audited) instead of timing out,
        and the retained document from an earlier run with it enabled is replaced at start,
        so no stale config lingers on the broker.
        """
        active = self.active
        if active is not None:
            about: dict[str, Any] = {"source": "hub", "version": active.version, "operator": active.operator,
                                     "ts": active.ts}
        else:
            about = {"source": "local", "version": None}
        config = self.gateway.config
        if not config.remote_config.enabled:
            return {**self.last, "enabled": False, "active": about}
        text, files = (active.text, active.files) if active is not None else self._local()
        about["digest"] = digest(text, files)
        locked = sorted(set(ALWAYS_LOCKED) | set(config.locked))
        return {**self.last, "enabled": True, "active": about, "config": shown(text, locked), "locked": locked,
                "inventory": files}

    def _local(self) -> tuple[str, dict[str, str]]:
        path = self.gateway.config_path
        if path is None:
            return "", {}
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return "", {}
        files = {}
        for name in self.gateway.config.inventory:
            try:
                files[name] = (path.parent / name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
        return text, files

    async def _desired(self, message: Received) -> None:
        async with self._lock:
            started = now_ms()
            answer: dict[str, Any] = {"id": None, "version": None, "operator": None}
            try:
                answer.update(await self._apply(message, answer))
            except Repeated:
                self.publish_state()
                return
            except Refused as exc:
                answer.update(status="refused", error={"code": exc.code, "message": str(exc)}, errors=exc.errors)
            answer["ts"] = now_ms()
            self.last = answer
            self.publish_state()
            log.info("config v%s from the hub by %s: %s%s", answer["version"], answer["operator"] or "anonymous",
                     answer["status"], f" ({answer['error']['message']})" if "error" in answer else "")
            record = {"ts": answer["ts"], "device": GATEWAY_TARGET, "id": answer["id"], "kind": "config",
                      "target": "config", "operator": answer["operator"], "status": answer["status"],
                      "output": {k: answer[k] for k in ("version", "added", "removed", "changed", "digest") if k in answer},
                      "checks": answer.pop("checks", []), "elapsed_ms": answer["ts"] - started}
            if "error" in answer:
                record["error"] = answer["error"]
            self.gateway.audit.append(record)

    async def _apply(self, message: Received, answer: dict[str, Any]) -> dict[str, Any]:
        gw = self.gateway
        settings = gw.config.remote_config
        checks: list[str] = []
        answer["checks"] = checks
        if len(message.payload) > settings.max_bytes:
            raise Refused("too_large", f"{len(message.payload)} bytes is over remote_config.max_bytes")
        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError as exc:
            raise Refused("malformed", f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Refused("malformed", "must be a JSON object")
        answer["id"] = body.get("id") if isinstance(body.get("id"), str) else None
        if answer["id"] is not None and answer["id"] == self.last.get("id"):
            raise Repeated  # the hub sent it again (a retry): answered, not applied twice
        version = body.get("version")
        answer["operator"] = operator = gw.access.identify(message.user, body.get("operator"))
        if not settings.enabled:  # after the id and operator: the sender gets its answer, the audit who it was
            answer["version"] = version if isinstance(version, int) and not isinstance(version, bool) else None
            raise Refused("disabled", "this gateway does not take configs from the hub (remote_config.enabled)")
        denied = authorize(gw.config.access, operator)
        if denied is not None:
            raise Refused("unauthorized", denied)
        checks.append(f"access: {operator} is admin of {GATEWAY_TARGET}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise Refused("malformed", "'version' must be a positive integer")
        answer["version"] = version
        if self.active is not None and version <= self.active.version:
            raise Refused("stale_version", f"version {version} is not newer than the active version {self.active.version}")
        text, files = self._inputs(body)
        if gw.config_path is None:
            raise Refused("unavailable", "this gateway was not started from a config file")
        source = f"hub config v{version}"
        try:
            config, specs = await asyncio.to_thread(build, text, files, source, gw.config_path)
        except ConfigError as exc:
            raise Refused("invalid", f"{len(exc.issues)} error(s); nothing was changed",
                          [issue.model_dump() for issue in exc.issues]) from None
        checks.append("validation: ok")
        before = (gw.config, dict(gw.specs))
        result = await gw.apply(config, specs, source)
        changes = {k: result[k] for k in ("added", "removed", "changed", "restart_needed")}
        self.last = {**answer, "status": "applying", **changes}
        self.publish_state()
        late = await self._wait_online(result["added"] + result["changed"], settings.rollback_after)
        if late:
            await gw.apply(*before, f"the config before hub config v{version} (rollback)")
            errors = [{"path": f"devices.{d}", "message": f"not online within {settings.rollback_after:g} s"
                       + (f": {why}" if why else "")} for d, why in late.items()]
            return {"status": "rolled_back", **changes, "errors": errors,
                    "error": {"code": "rolled_back", "message": f"{len(late)} device(s) did not come online; "
                                                                 "the previous config is running again"}}
        self.active = Active(version, text, files, operator, now_ms())
        await asyncio.to_thread(self._save, self.active)
        return {"status": "applied", **changes, "digest": digest(text, files)}

    def _inputs(self, body: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The config text (sent, or the active one) and the inventory files (sent ones replace)."""
        text = body.get("config")
        inventory = body.get("inventory", {})
        if text is not None and not isinstance(text, str):
            raise Refused("malformed", "'config' must be the config file's text")
        if not isinstance(inventory, dict) or not all(isinstance(v, str) for v in inventory.values()):
            raise Refused("malformed", "'inventory' must map file names to their text")
        if text is None and not inventory:
            raise Refused("malformed", "needs 'config' (the file's text), 'inventory' (files by name), or both")
        active_text, active_files = (self.active.text, self.active.files) if self.active else self._local()
        files = {**(self.active.files if self.active else {}), **inventory}
        if text is None:
            if self.active is None:
                files = {**active_files, **inventory}
            text = active_text
        return text, files

    async def _wait_online(self, devices: list[str], window: float) -> dict[str, str]:
        """The devices not online within ``window`` seconds, with their last error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        runners = self.gateway.runners
        while True:
            late = {d: runners[d].last_error or "" for d in devices if d in runners and not runners[d].online}
            if not late or loop.time() >= deadline:
                return late
            await asyncio.sleep(0.05)

    def _save(self, active: Active) -> None:
        path = self._store
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(orjson.dumps(asdict(active)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
