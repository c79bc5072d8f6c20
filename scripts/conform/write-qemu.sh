#!/bin/sh
# vhd conform writer adapter: QEMU's vpc driver.
#   write-qemu.sh dynamic|fixed on|off RAW IMAGE
# The second argument is force_size: off (qemu's default) rounds the size
# up to what a CHS geometry describes and writes creator "qemu"; on keeps
# the size and writes creator "qem2" with geometry 65535/16/255.
set -eu
exec qemu-img convert -q -f raw -O vpc -o "subformat=$1,force_size=$2" "$3" "$4"
