"""``citytwin hub``'s connection options as the README prints them: before or after the action,
from the environment and from a profile file (flag > environment > profile > default).

The operator a command carries is read where the gateway reads it, as the MQTT 5 user property
of the command published on a real mosquitto; no gateway answers, so the commands time out
(exit 5) after showing what they sent.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conftest import Mosquitto
from hubcli_support import Result, hub_cli

TOPIC = "citytwin/v1/gw-x/dev-1/services/start_pump/invoke"


class Commands:
    """Commands as the broker delivers them to the gateway: the operator user property of each."""

    def __init__(self) -> None:
        self.operators: list[str | None] = []
        self.changed = asyncio.Event()

    async def next_operator(self) -> str | None:
        await asyncio.wait_for(self.changed.wait(), 10)
        self.changed.clear()
        return self.operators[-1]


@pytest.fixture
async def commands(mosquitto: Mosquitto) -> AsyncIterator[Commands]:
    seen = Commands()
    client = aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5,
                            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
    async with client:
        await client.subscribe(TOPIC, qos=1)

        async def listen() -> None:
            async for message in client.messages:
                props = getattr(message.properties, "UserProperty", None) or []
                seen.operators.append(dict(props).get("operator"))
                seen.changed.set()

        task = asyncio.create_task(listen())
        yield seen
        task.cancel()


async def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return await hub_cli(*args, env={"CITYTWIN_BROKER": "", "CITYTWIN_HUB_BROKER": "", "CITYTWIN_OPERATOR": "",
                                     "CITYTWIN_PROFILE": "", **(env or {})})


async def test_connection_options_before_the_action_as_the_readme_prints_them(
    mosquitto: Mosquitto, commands: Commands, tmp_path: Path,
) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}  # no profile file
    result = await invoke("--broker", mosquitto.url, "--operator", "control-room", "devices", env=env)
    assert result.code == 0, result.err
    assert f"no gateways under 'citytwin/v1' on {mosquitto.url}" in result.out

    sent = await invoke("--broker", mosquitto.url, "--operator", "control-room",
                        "invoke", "gw-x/dev-1", "start_pump", "pump=1", "--timeout", "0.3s", env=env)
    assert sent.code == 5, sent.err  # nobody answers: timeout
    assert await commands.next_operator() == "control-room"
    # after the action, as before, and a value after the action wins over one before it
    sent = await invoke("--broker", "mqtt://127.0.0.1:1", "invoke", "gw-x/dev-1", "start_pump", "pump=1",
                        "--broker", mosquitto.url, "--operator", "night-shift", "--timeout", "0.3s", env=env)
    assert sent.code == 5, sent.err
    assert await commands.next_operator() == "night-shift"


async def test_environment_and_profile_with_flag_over_env_over_profile(
    mosquitto: Mosquitto, commands: Commands, tmp_path: Path,
) -> None:
    profiles = tmp_path / "citytwin" / "hub.yaml"
    profiles.parent.mkdir()
    profiles.write_text(f"default:\n  broker: {mosquitto.url}\n  operator: from-profile\n"
                        f"lab:\n  broker: {mosquitto.url}\n  operator: lab-operator\n"
                        "broken:\n  brokr: mqtt://x\n")
    base = {"XDG_CONFIG_HOME": str(tmp_path)}
    args = ("invoke", "gw-x/dev-1", "start_pump", "pump=1", "--timeout", "0.3s")

    assert (await invoke(*args, env=base)).code == 5
    assert await commands.next_operator() == "from-profile"
    assert (await invoke(*args, env={**base, "CITYTWIN_OPERATOR": "from-env"})).code == 5
    assert await commands.next_operator() == "from-env"
    assert (await invoke("--operator", "from-flag", *args, env={**base, "CITYTWIN_OPERATOR": "from-env"})).code == 5
    assert await commands.next_operator() == "from-flag"
    assert (await invoke("--profile", "lab", *args, env=base)).code == 5
    assert await commands.next_operator() == "lab-operator"
    assert (await invoke(*args, env={**base, "CITYTWIN_PROFILE": "lab"})).code == 5
    assert await commands.next_operator() == "lab-operator"
    # the environment's broker wins over the profile's
    wrong = await invoke(*args, env={**base, "CITYTWIN_BROKER": "mqtt://127.0.0.1:1"})
    assert wrong.code == 1 and "mqtt://127.0.0.1:1" in wrong.err, wrong.err
    # CITYTWIN_HUB_CONFIG names another file
    other = tmp_path / "elsewhere.yaml"
    other.write_text(f"default:\n  broker: {mosquitto.url}\n  operator: elsewhere\n")
    assert (await invoke(*args, env={"CITYTWIN_HUB_CONFIG": str(other)})).code == 5
    assert await commands.next_operator() == "elsewhere"

    # a bad profile is a usage error that names the file, the profile and the key
    bad = await invoke("--profile", "broken", *args, env=base)
    assert bad.code == 2
    assert f"{profiles} [broken]: unknown setting 'brokr'; did you mean 'broker'?" in bad.err
    missing = await invoke("--profile", "nope", *args, env=base)
    assert missing.code == 2 and "no profile 'nope' (profiles: default, lab, broken)" in missing.err


def _help(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", *args, "--help"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("where", [("hub",), ("hub", "devices"), ("hub", "invoke")])
def test_hub_help_shows_the_connection_options_without_markup(where: Any) -> None:
    text = _help(*where)
    for option in ("--broker URL", "--operator NAME", "--profile NAME", "--connect-timeout DURATION"):
        assert option in text, text
    assert "$CITYTWIN_BROKER" in text and "$CITYTWIN_OPERATOR" in text
    assert "``" not in text
    assert "(default: 10s)" in text  # --connect-timeout
