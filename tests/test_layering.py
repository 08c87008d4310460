"""Imports follow the data flow, and every module imports from a real (non-editable) install."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "drivers": ("citytwin.gateway",),
    "thingmodels": ("citytwin.gateway", "citytwin.drivers", "citytwin.simulators"),
    "simulators": ("citytwin.gateway", "citytwin.drivers"),
}
# the protocol libraries belong to their drivers: the gateway reaches them only through drivers
GATEWAY_FORBIDDEN = ("pymodbus",)


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in imports(path)
        if name.startswith(FORBIDDEN[package])
    ]
    assert not offenders


def test_gateway_never_imports_protocol_libraries() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "gateway").rglob("*.py")
        for name in imports(path)
        if name.split(".")[0] in GATEWAY_FORBIDDEN
    ]
    assert not offenders


def test_every_module_imports_from_a_built_wheel(tmp_path: Path) -> None:
    # an editable install hides a subpackage missing from pyproject's list: build for real
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    modules = []
    for folder, package in (("gateway", "citytwin.gateway"), ("drivers", "citytwin.drivers"),
                            ("thingmodels", "citytwin.thingmodels"), ("simulators", "citytwin.simulators")):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if parts and parts[-1] == "__main__":  # runs the command when imported
                continue
            modules.append(".".join([package, *parts]))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    mod = importlib.import_module(m)\n"
        f"    assert mod.__file__.startswith({str(target)!r}), (m, mod.__file__)\n"
        "from importlib import resources\n"
        "assert resources.files('citytwin.gateway.examples').joinpath('pump-station.yaml').is_file()\n"
        "assert resources.files('citytwin.thingmodels').joinpath('standard/pump_station.json').is_file()\n"
        "assert resources.files('citytwin.simulators.pump_station').joinpath('register_map.md').is_file()\n"
    )
    # the built tree goes first on sys.path, ahead of the editable install's finder
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n" + code],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
