#!/bin/sh
# vhd conform reader adapter: vhd itself, as any other command.
#   read-vhd.sh IMAGE RAW
# $VHD names the vhd to run (vhd conform sets it to itself); else vhd on
# the PATH.
set -eu
exec "${VHD:-vhd}" convert --from vhd --to raw "$1" "$2" > /dev/null
