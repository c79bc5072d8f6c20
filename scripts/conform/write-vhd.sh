#!/bin/sh
# vhd conform writer adapter: vhd itself, as any other command.
#   write-vhd.sh dynamic|fixed RAW IMAGE
# $VHD names the vhd to run (vhd conform sets it to itself); else vhd on
# the PATH.
set -eu
exec "${VHD:-vhd}" convert --from raw --to "$1" "$2" "$3" > /dev/null
