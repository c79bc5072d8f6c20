#!/bin/sh
# vhd conform writer adapter: pyvhd (do_vhd_convert, raw to dynamic).
#   write-pyvhd.sh RAW IMAGE
# Python: $VHDREF_VENV/bin/python (default /opt/vhdref-venv).
set -eu
python=${VHDREF_VENV:-/opt/vhdref-venv}/bin/python
exec "$python" - "$1" "$2" <<'PY'
import sys
import pyvhd

with open(sys.argv[1], "rb") as raw, open(sys.argv[2], "wb") as image:
    pyvhd.do_vhd_convert(raw, image)
PY
