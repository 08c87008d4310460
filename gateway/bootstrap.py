"""From a config file to validated, model-checked device specs, or every error at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from citytwin.drivers.registry import binding_models
from citytwin.gateway import overrides as ov
from citytwin.gateway.config import (
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    format_path,
)
from citytwin.gateway.configfile import read_config_text
from citytwin.gateway.devicespec import DeviceSpec, compile_config


def prepare(
    text: str, source: str, base_dir: Path, overrides: Sequence[ov.Override] = (),
) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    config, doc = ov.parse(text, source, overrides)
    specs, problems = compile_config(config, base_dir)
    if problems:
        raise ov.blame(ConfigError(
            [ConfigIssue(source=source, line=doc.line_of(loc), path=format_path(loc), message=msg)
             for loc, msg in problems]
        ), overrides, doc)
    return config, specs


def prepare_file(
    path: str | Path, overrides: Sequence[ov.Override] | None = None,
) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    """``overrides`` None: the environment's and this process's (``overrides.active()``)."""
    path = Path(path)
    text = read_config_text(path)
    config, specs = prepare(text, str(path), path.parent, ov.active() if overrides is None else overrides)
    base = path.parent
    # relative paths in the file are relative to the file, not to the working directory
    if not config.gateway.data_dir.is_absolute():
        config.gateway.data_dir = (base / config.gateway.data_dir).resolve()
    tls = config.hub.tls
    if tls is not None:
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, name)
            if value is not None and not value.is_absolute():
                setattr(tls, name, (base / value).resolve())
    for spec in specs.values():
        # each driver places its own files (OPC UA's pki_dir) under the data directory
        place_files = binding_models(spec.config.driver).prepare
        spec.config.connection = place_files(spec.config.connection, config.gateway.data_dir, spec.id)
    return config, specs
