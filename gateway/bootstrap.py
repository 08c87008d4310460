"""From a config file to validated, model-checked device specs, or every error at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from citytwin.drivers.registry import binding_models
from citytwin.gateway import overrides as ov
from citytwin.gateway.config import ConfigError, GatewayConfig, issue_at
from citytwin.gateway.configfile import read_config_text
from citytwin.gateway.devicespec import DeviceSpec, compile_config
from citytwin.gateway.templates_config import dedupe_issues
from citytwin.gateway.yamlsrc import Located


def prepare(
    text: str, source: str, base_dir: Path, overrides: Sequence[ov.Override] = (),
    files: Mapping[str, str] | None = None,
) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    """Parse (templates and inventories expanded, overrides applied), validate and compile."""
    config, doc = ov.parse(text, source, overrides, base_dir, files)
    try:
        return compile_checked(config, doc, base_dir)
    except ConfigError as exc:
        raise ov.blame(exc, overrides, doc) from None


def compile_checked(config: GatewayConfig, doc: Located, base_dir: Path) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    """Compile a validated config's devices; every model cross-check error at its place."""
    specs, problems = compile_config(config, base_dir)
    if problems:
        raise ConfigError(dedupe_issues([issue_at(doc, loc, msg) for loc, msg in problems]))
    return config, specs


def prepare_file(
    path: str | Path, overrides: Sequence[ov.Override] | None = None,
) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    """``overrides`` None: the environment's and this process's (``overrides.active()``)."""
    path = Path(path)
    text = read_config_text(path)
    config, specs = prepare(text, str(path), path.parent, ov.active() if overrides is None else overrides)
    resolve_paths(config, specs, path.parent)
    return config, specs


def resolve_paths(config: GatewayConfig, specs: dict[str, DeviceSpec], base: Path) -> None:
    """Make the config's file paths absolute (relative to ``base``, the config's folder)."""
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
