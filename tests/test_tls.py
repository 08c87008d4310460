"""TLS and mutual TLS to the hub broker: a real mosquitto with ``require_certificate true``.

Certificates come from trustme (a throwaway CA per test). The broker also requires a password,
so every test can check that the password never shows up in logs or error output.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import yaml
from conftest import GatewayProcess, Mosquitto, write_config
from hubcli_support import Result, hub_cli

from citytwin.gateway.config import ConfigError, parse_config
from citytwin.simulators.pump_station.server import PumpStationSimulator

DEV = "pump-station-1"
GW = "ps-north-01"
USER, PASSWORD = "gateway", "s3cret-Pa55-never-logged"
pytestmark = pytest.mark.slow


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("ps-north-01.gateways.example.city")
    out = Certs(*(tmp_path / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem")))
    ca.cert_pem.write_to_path(str(out.ca))
    other.cert_pem.write_to_path(str(out.other_ca))
    server.cert_chain_pems[0].write_to_path(str(out.server_cert))
    server.private_key_pem.write_to_path(str(out.server_key))
    client.cert_chain_pems[0].write_to_path(str(out.client_cert))
    client.private_key_pem.write_to_path(str(out.client_key))
    return out


class TlsMosquitto(Mosquitto):
    """The conftest broker with one TLS listener that requires a client certificate and a password."""

    def __init__(self, workdir: Path, certs: Certs) -> None:
        super().__init__(workdir)
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        passwords = workdir / "passwords"
        subprocess.run([passwd, "-b", "-c", str(passwords), USER, PASSWORD], check=True, capture_output=True)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {certs.ca}\ncertfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
            "require_certificate true\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            # started as root, mosquitto would switch to its own user, who cannot read pytest's
            # private tmp_path; as any other user this line has no effect
            "user root\n"
        )

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"


@pytest.fixture
def tls_broker(tmp_path: Path, certs: Certs) -> Iterator[TlsMosquitto]:
    broker = TlsMosquitto(tmp_path, certs)
    broker.start()
    yield broker
    broker.stop()


def gateway_config(tmp_path: Path, broker: TlsMosquitto, sim: PumpStationSimulator, tls: dict[str, object]) -> Path:
    path = write_config(tmp_path / "gw.yaml", broker.url, sim.port)
    doc = yaml.safe_load(path.read_text())
    doc["hub"].update({"username": USER, "password": PASSWORD, "tls": tls})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli_tls(broker: TlsMosquitto, certs: Certs, tmp_path: Path) -> list[str]:
    secret = tmp_path / "hub-password"
    secret.write_text(PASSWORD + "\n")
    return ["--broker", broker.url, "--cafile", str(certs.ca), "--cert", str(certs.client_cert),
            "--key", str(certs.client_key), "--username", USER, "--password-file", str(secret)]


async def wait_online(args: list[str], timeout: float = 20) -> Result:
    async def poll() -> Result:
        while True:
            result = await hub_cli("devices", *args, "--json", "--settle", "0.3s")
            if result.code == 0 and any(r["device"] == DEV and r["state"] == "online" for r in result.json()):
                return result
            await asyncio.sleep(0.5)

    return await asyncio.wait_for(poll(), timeout)


async def test_gateway_connects_with_a_client_certificate_and_the_cli_works_over_tls(
    tmp_path: Path, tls_broker: TlsMosquitto, certs: Certs, sim: PumpStationSimulator
) -> None:
    config = gateway_config(tmp_path, tls_broker, sim, {
        "ca_file": str(certs.ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key)})
    proc = GatewayProcess(config)
    proc.start()
    try:
        args = cli_tls(tls_broker, certs, tmp_path)
        await wait_online(args)
        result = await hub_cli("invoke", DEV, "start_pump", "pump=1", *args, "--json")
        assert result.code == 0, result.out + result.err
        assert sim.station.pump(1).run_cmd is True
        # the password comes from the environment as well
        env_args = [a for a in args if a not in ("--password-file", str(tmp_path / "hub-password"))]
        twin = await hub_cli("twin", DEV, *env_args, "--json", env={"CITYTWIN_HUB_PASSWORD": PASSWORD})
        assert twin.code == 0, twin.err
        assert "level" in twin.json()["reported"]
    finally:
        assert proc.stop() == 0, proc.output()
    log = proc.output()
    assert f"hub link up: {tls_broker.url}" in log
    assert PASSWORD not in log


async def test_gateway_without_a_client_certificate_is_refused_with_a_clear_error(
    tmp_path: Path, tls_broker: TlsMosquitto, certs: Certs, sim: PumpStationSimulator
) -> None:
    config = gateway_config(tmp_path, tls_broker, sim, {"ca_file": str(certs.ca)})
    proc = GatewayProcess(config)
    proc.start()
    try:
        for _ in range(100):  # 20 s
            if "certificate required" in proc.output():
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("no clear TLS error in the gateway log:\n" + proc.output())
    finally:
        assert proc.stop() == 0, proc.output()
    log = proc.output()
    assert "hub link up" not in log
    assert PASSWORD not in log


async def test_cli_refused_without_certificate_or_with_the_wrong_ca(
    tmp_path: Path, tls_broker: TlsMosquitto, certs: Certs
) -> None:
    args = cli_tls(tls_broker, certs, tmp_path)
    without_cert = [a for a in args if a not in ("--cert", str(certs.client_cert), "--key", str(certs.client_key))]
    result = await hub_cli("devices", *without_cert, "--connect-timeout", "3s")
    assert result.code == 1
    assert "cannot connect" in result.err and "certificate required" in result.err, result.err
    wrong_ca = [str(certs.other_ca) if a == str(certs.ca) else a for a in args]
    result = await hub_cli("devices", *wrong_ca, "--connect-timeout", "3s")
    assert result.code == 1 and "certificate verify failed" in result.err, result.err
    wrong_password = await hub_cli("devices", *without_cert[:-2], "--cert", str(certs.client_cert), "--key",
                                   str(certs.client_key), "--connect-timeout", "3s",
                                   env={"CITYTWIN_HUB_PASSWORD": "wrong-" + PASSWORD})
    assert wrong_password.code == 1, wrong_password.err
    for output in (result.err, wrong_password.err, wrong_password.out):
        assert PASSWORD not in output and "Traceback" not in output


def test_config_check_never_prints_the_password(tmp_path: Path, certs: Certs) -> None:
    config = write_config(tmp_path / "gw.yaml", "mqtts://127.0.0.1:8883", 5020)
    doc = yaml.safe_load(config.read_text())
    doc["hub"].update({"username": USER, "password": PASSWORD, "tls": {"ca_file": str(certs.ca)}})
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", "config", "check", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    doc["hub"]["tls"] = {"insecure_skip_verify": "maybe"}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "citytwin.gateway.cli", "config", "check", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "hub.tls.insecure_skip_verify" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("hub", "message"),
    [
        ({"url": "mqtt://broker:1883", "tls": {}}, "tls needs an mqtts:// url"),
        ({"url": "mqtts://broker", "tls": {"key_file": "k.pem"}}, "key_file needs cert_file"),
        ({"url": "mqtts://user:pw@broker:8883"}, "must look like"),
        ({"url": "https://broker"}, "must look like"),
    ],
)
def test_tls_config_errors(hub: dict[str, object], message: str) -> None:
    text = yaml.safe_dump({"gateway": {"id": "gw"}, "hub": hub})
    with pytest.raises(ConfigError) as info:
        parse_config(text, "gw.yaml")
    assert message in str(info.value)
    assert "pw" not in str(info.value).replace("mqtts://user:pw@", "")


def test_mqtts_defaults_to_port_8883() -> None:
    config, _ = parse_config(yaml.safe_dump({"gateway": {"id": "gw"}, "hub": {"url": "mqtts://broker.city"}}), "gw.yaml")
    assert (config.hub.use_tls, config.hub.host, config.hub.port) == (True, "broker.city", 8883)
    config, _ = parse_config(yaml.safe_dump({"gateway": {"id": "gw"}, "hub": {"url": "mqtt://broker.city"}}), "gw.yaml")
    assert (config.hub.use_tls, config.hub.port) == (False, 1883)
