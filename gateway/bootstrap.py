"""From a config file to validated, model-checked device specs, or every error at once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from citytwin.drivers.registry import binding_models
from citytwin.gateway.config import (
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    issue_at,
    parse_config,
)
from citytwin.gateway.devicespec import DeviceSpec, compile_config
from citytwin.gateway.templates_config import dedupe_issues
from citytwin.gateway.yamlsrc import Located


def prepare(
    text: str, source: str, base_dir: Path, files: Mapping[str, str] | None = None,
) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    config, doc = parse_config(text, source, base_dir, files)
    return compile_checked(config, doc, base_dir)


def compile_checked(config: GatewayConfig, doc: Located, base_dir: Path) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    """Compile a validated config's devices; every model cross-check error at its place."""
    specs, problems = compile_config(config, base_dir)
    if problems:
        raise ConfigError(dedupe_issues([issue_at(doc, loc, msg) for loc, msg in problems]))
    return config, specs


def prepare_file(path: str | Path) -> tuple[GatewayConfig, dict[str, DeviceSpec]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(source=str(path), line=0, path="", message=f"cannot read: {exc}")]) from None
    config, specs = prepare(text, str(path), path.parent)
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
