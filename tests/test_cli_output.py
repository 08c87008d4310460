"""What every command prints around its work: a closed stdout, help texts and defaults, library
warnings, and the words of an access refusal."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE, free_port, wait_port

from citytwin.gateway.access import Access
from citytwin.gateway.cli.helpformat import HelpFormatter
from citytwin.gateway.cli.main import build_parser
from citytwin.gateway.config import AccessSection, Grant

CLI = [sys.executable, "-m", "citytwin.gateway.cli"]


@pytest.mark.parametrize("command, code", [
    (("config", "schema"), 141), (("config", "check", str(EXAMPLE)), 141), (("model", "list"), 141),
    # argparse drops a help text it cannot write and exits 0
    (("hub", "--help"), 0), (("--help",), 0),
])
def test_a_closed_stdout_ends_the_command_quietly(command: tuple[str, ...], code: int) -> None:
    """``citytwin config schema | head -1``: the reader is gone before the command writes."""
    read, write = os.pipe()
    os.close(read)  # every write now fails with EPIPE, as after ``head`` has exited
    try:
        result = subprocess.run([*CLI, *command], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert result.returncode == code, result.stderr  # 141: as a shell reports a process ended by SIGPIPE
    assert result.stderr == ""


def test_the_readme_pipe_prints_its_first_line_and_nothing_else() -> None:
    result = subprocess.run(["bash", "-c", f"{' '.join(CLI)} config schema | head -1"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "{\n" and result.stderr == "", result.stderr


def _actions(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


# the commands of issue 14; model/audit/bench have their own owners and tests
OURS = ("run", "config", "sim", "discover", "demo", "hub", "status", "reload")


def test_every_option_has_help_and_shows_its_default() -> None:
    missing, no_default = [], []
    formatter = HelpFormatter("citytwin")
    for path, action in _actions(build_parser(), ()):
        if path and path[0] not in OURS:
            continue
        where = " ".join(path) + " " + (action.option_strings[-1] if action.option_strings else action.dest)
        if not action.help:
            missing.append(where)
        default = action.default
        if action.option_strings and default not in (None, False, argparse.SUPPRESS, []):
            if "default" not in (formatter._get_help_string(action) or ""):
                no_default.append(where)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose default is not shown: {no_default}"


@pytest.mark.parametrize("command, shown", [
    (("sim", "pump-station"), ["--host HOST", "(default: 127.0.0.1)", "(default: 5020)", "Modbus unit"]),
    (("discover",), ["(default: 5.0)"]),
    (("hub", "desired"), ["JSON merge patch", "--patch JSON"]),
    (("config", "check"), ["--set PATH=VALUE", "CITYTWIN__HUB__URL"]),
])
def test_help_texts_as_a_newcomer_reads_them(command: tuple[str, ...], shown: list[str]) -> None:
    result = subprocess.run([*CLI, *command, "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 0
    for text in shown:
        assert text in result.stdout, result.stdout


def test_run_imports_only_its_own_command_and_a_typo_still_lists_every_command() -> None:
    """``citytwin run`` pays for no other command's imports before its first poll (the model
    tools' converters cost ~0.15 s of CPU); help and mistakes still see every command."""
    probe = ("import sys; from citytwin.gateway.cli.main import build_parser, command_word; "
             "build_parser(command_word(sys.argv[1:])); "
             "print(sorted(m for m in sys.modules if m.startswith('citytwin.gateway.cli.')))")
    loaded = subprocess.run([sys.executable, "-c", probe, "--log-level", "warning", "run", "-c", "x.yaml"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert "citytwin.gateway.cli.model'" not in loaded and "cli.hub'" not in loaded and "cli.bench'" not in loaded
    assert "cli.main'" in loaded
    typo = subprocess.run([*CLI, "rnu"], capture_output=True, text=True, timeout=60)
    assert typo.returncode == 2
    for name in ("run", "model", "hub", "status", "bench", "sim", "audit"):
        assert f"'{name}'" in typo.stderr, typo.stderr
    status = subprocess.run([*CLI, "--log-format", "json", "status", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0 and "usage: citytwin status" in status.stdout, status.stdout + status.stderr


def test_discover_prints_no_library_warning(tmp_path: Path) -> None:
    port = free_port()
    sim = subprocess.Popen([*CLI, "sim", "intersection", "--port", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 30)
        result = subprocess.run([*CLI, "discover", f"opcua://127.0.0.1:{port}"], capture_output=True, text=True,
                                timeout=60)
    finally:
        sim.terminate()
        sim.wait(20)
    assert result.returncode == 0, result.stderr
    assert "# discovered from opc.tcp://" in result.stdout, result.stdout
    assert result.stderr == "", result.stderr  # asyncua's "Requested session timeout …" warning stays out


def test_access_refusals_read_as_sentences() -> None:
    access = Access(AccessSection(grants=[Grant(operators=["control-room"], role="operator")]), {})
    assert access.check("control-room", "pump-station-1", "desired", ["pump1_frequency_setpoint"]) == (
        "operator 'control-room' may not change the desired state of device 'pump-station-1' "
        "(property 'pump1_frequency_setpoint'): that needs the admin role, and no access grant gives it "
        "(deny by default)")
    assert access.check("visitor", "pump-station-1", "invoke", ["start_pump"]) == (
        "operator 'visitor' may not invoke service 'start_pump' on device 'pump-station-1': that needs "
        "the operator role, and no access grant gives it (deny by default)")
    assert access.check(None, "pump-station-1", "set", ["pump1_frequency_setpoint"]) == (
        "a command that names no operator may not set property 'pump1_frequency_setpoint' on device "
        "'pump-station-1': that needs the operator role, and commands naming no operator have the role "
        "'none' (access.anonymous)")
    assert access.check("control-room", "pump-station-1", "invoke", ["start_pump"]) is None
