#!/bin/sh
# vhd conform reader adapter: dissect.hypervisor's VHD class.
#   read-dissect.sh IMAGE RAW
# dissect has no differencing support (it reads a child as a lone dynamic
# disk): run it with --skip-differencing (scripts/conform/peers.tsv).
# Python: $VHDREF_VENV/bin/python (default /opt/vhdref-venv).
set -eu
python=${VHDREF_VENV:-/opt/vhdref-venv}/bin/python
exec "$python" - "$1" "$2" <<'PY'
import sys
from dissect.hypervisor.disk.vhd import VHD

image, raw = sys.argv[1], sys.argv[2]
with open(image, "rb") as fh, open(raw, "wb") as out:
    disk = VHD(fh)
    left = disk.size
    disk.seek(0)
    while left > 0:
        data = disk.read(min(left, 1 << 20))
        if not data:
            sys.exit("dissect returned no data with %d bytes left" % left)
        out.write(data)
        left -= len(data)
PY
