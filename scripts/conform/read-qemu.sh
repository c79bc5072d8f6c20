#!/bin/sh
# vhd conform reader adapter: QEMU's vpc driver.
#   read-qemu.sh IMAGE RAW
# qemu-img has no differencing support for VHD (it reads a child as a lone
# dynamic disk): run it with --skip-differencing (scripts/conform/peers.tsv).
# The format is named: probing finds a fixed VHD's footer only at the end,
# which qemu-img does not look at, and would take it for a raw disk.
set -eu
exec qemu-img convert -q -f vpc -O raw "$1" "$2"
