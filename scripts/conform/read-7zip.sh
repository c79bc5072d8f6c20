#!/bin/sh
# vhd conform reader adapter: 7-Zip's VHD handler (7zz).
#   read-7zip.sh IMAGE RAW
# 7-Zip finds the parent of a differencing image by its name in the
# child's directory, so it runs there. -tvhd keeps 7-Zip from taking guest
# contents for another archive format.
set -eu
image=$1
raw=$2
case $raw in /*) ;; *) raw=$(pwd)/$raw ;; esac
cd "$(dirname "$image")"
exec 7zz e -tvhd -so -- "$(basename "$image")" > "$raw"
