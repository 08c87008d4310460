"""Where ``citytwin hub`` takes its broker connection from: flag > environment > profile > default.

An operator types the broker and their name once, as with the AWS CLI's profiles or mosquitto's
``~/.config/mosquitto_sub``: ``~/.config/citytwin/hub.yaml`` (``$XDG_CONFIG_HOME`` respected,
``$CITYTWIN_HUB_CONFIG`` names another file) holds named profiles; ``--profile NAME`` or
``$CITYTWIN_PROFILE`` picks one, else ``default`` is used when the file has it::

    default:
      broker: mqtt://127.0.0.1:1883
      operator: control-room
    city:
      broker: mqtts://broker.city:8883
      operator: alice
      cafile: ~/city-ca.pem            # relative paths are relative to this file
      password_file: ~/.config/citytwin/city.password

Keys are the long options without ``--`` (``-`` or ``_``). The password is never in the file
itself: ``password_file``, or ``$CITYTWIN_HUB_PASSWORD``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ProfileError(Exception):
    """The profile file or the profile asked for is unusable; the message names file and key."""


@dataclass(frozen=True, slots=True)
class Setting:
    default: Any
    env: tuple[str, ...] = ()
    convert: Callable[[Any], Any] | None = None


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise ValueError("must be a single value")
    return str(value)


def _protocol(value: Any) -> str:
    text = _text(value)
    if text not in ("5", "3.1.1"):
        raise ValueError("must be 5 or 3.1.1")
    return text


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _seconds(value: Any) -> float:
    from citytwin.gateway.cli.hub import duration

    try:
        return duration(_text(value))
    except Exception as exc:  # argparse.ArgumentTypeError carries the explanation
        raise ValueError(str(exc)) from None


DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
# name -> default, environment variables (first set one wins), converter of text values
SETTINGS: dict[str, Setting] = {
    "broker": Setting(DEFAULT_BROKER, ("CITYTWIN_BROKER", "CITYTWIN_HUB_BROKER"), _text),
    "operator": Setting(None, ("CITYTWIN_OPERATOR",), _text),
    "prefix": Setting("citytwin/v1", ("CITYTWIN_HUB_PREFIX",), _text),
    "protocol": Setting("5", ("CITYTWIN_HUB_PROTOCOL",), _protocol),
    "gateway": Setting(None, (), _text),
    "operator_in_payload": Setting(False, (), _flag),
    "client_id": Setting(None, (), _text),
    "username": Setting(None, ("CITYTWIN_HUB_USERNAME",), _text),
    "password_file": Setting(None, (), None),  # a path: resolved against the profile file
    "cafile": Setting(None, (), None),
    "cert": Setting(None, (), None),
    "key": Setting(None, (), None),
    "insecure": Setting(False, (), _flag),
    "connect_timeout": Setting(10.0, ("CITYTWIN_HUB_CONNECT_TIMEOUT",), _seconds),
}
PATHS = ("password_file", "cafile", "cert", "key")


def profile_file(environ: Mapping[str, str]) -> Path:
    if environ.get("CITYTWIN_HUB_CONFIG"):
        return Path(environ["CITYTWIN_HUB_CONFIG"]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base).expanduser() / "citytwin" / "hub.yaml"


def load_profile(name: str | None, environ: Mapping[str, str]) -> tuple[dict[str, Any], str | None]:
    """The settings of profile ``name`` (None: $CITYTWIN_PROFILE, else ``default`` if present)
    and where they came from (``hub.yaml [city]``), or ({}, None) without a file."""
    path = profile_file(environ)
    explicit = name or environ.get("CITYTWIN_PROFILE") or None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ProfileError(f"profile {explicit!r}: no profile file {path}") from None
        return {}, None
    except OSError as exc:
        raise ProfileError(f"cannot read the profile file {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: must map profile names to settings")
    chosen = explicit or "default"
    if chosen not in doc:
        if explicit:
            known = ", ".join(map(str, doc)) or "none"
            raise ProfileError(f"{path}: no profile {chosen!r} (profiles: {known})")
        return {}, None
    raw = doc[chosen] or {}
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: profile {chosen!r} must map settings to values")
    where = f"{path} [{chosen}]"
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name_ = str(key).replace("-", "_")
        if name_ not in SETTINGS:
            close = difflib.get_close_matches(name_, SETTINGS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ProfileError(f"{where}: unknown setting {key!r}{hint} ({', '.join(SETTINGS)})")
        settings[name_] = _convert(name_, value, where, path.parent)
    return settings, where


def _convert(name: str, value: Any, where: str, base: Path) -> Any:
    if name in PATHS:
        path = Path(_text(value)).expanduser()
        return path if path.is_absolute() else base / path
    convert = SETTINGS[name].convert
    try:
        return value if convert is None else convert(value)
    except ValueError as exc:
        raise ProfileError(f"{where}: {name}: {exc}") from None


def resolve(given: Mapping[str, Any], profile: str | None,
            environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every connection setting: ``given`` (the flags that were typed) > environment > profile > default."""
    environ = os.environ if environ is None else environ
    from_profile, _ = load_profile(profile, environ)
    out: dict[str, Any] = {}
    for name, setting in SETTINGS.items():
        if name in given:
            out[name] = given[name]
            continue
        env = next((var for var in setting.env if environ.get(var)), None)
        if env is not None:
            try:
                out[name] = _convert(name, environ[env], f"${env}", Path.cwd())
            except ProfileError as exc:
                raise ProfileError(str(exc).replace(f": {name}:", ":", 1)) from None
            continue
        out[name] = from_profile.get(name, setting.default)
    return out
