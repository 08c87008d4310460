#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the tests need when it is
# missing (mosquitto, libmodbus and a C compiler from Debian packages; the project with its dev
# extra into .venv), then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libmodbus 2>/dev/null || need+=(libmodbus-dev)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # verifies deploy/systemd/
command -v coap-server-notls >/dev/null 2>&1 || command -v coap-server >/dev/null 2>&1 || need+=(libcoap3-bin)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)  # the README test runs commands in a network namespace
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)  # the node-opcua peer of the OPC UA tests
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "test.sh: installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# foreign peers from npm, pinned in their package.json: node-opcua (OPC UA interop), the
# Eclipse Thingweb playground (Thing Description validation) and node-wot (a WoT consumer); no
# lock files are kept
if [ ! -d tests/node-opcua/node_modules/node-opcua ]; then
  (cd tests/node-opcua && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi
if [ ! -d tests/bacnet-peer/node_modules/@bacnet-js/client ]; then  # a foreign BACnet/IP device
  (cd tests/bacnet-peer && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi
if [ ! -d tests/node/node_modules/@thing-description-playground/core ]; then
  (cd tests/node && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi
# Eclipse Thingweb node-wot: the foreign WoT consumer of the gateway's Things
if [ ! -d tests/node-wot/node_modules/@node-wot/core ]; then
  (cd tests/node-wot && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
