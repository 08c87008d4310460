#!/bin/sh
# Build the libmodbus test slave: build.sh OUTPUT  (needs gcc and libmodbus-dev)
set -eu
here=$(dirname "$0")
# shellcheck disable=SC2046  # pkg-config prints several flags
exec gcc -std=c11 -O2 -Wall -Wextra -Werror -D_DEFAULT_SOURCE -o "$1" "$here/slave.c" $(pkg-config --cflags --libs libmodbus)
