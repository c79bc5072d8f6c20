#!/bin/sh
# vhd conform reader adapter: libvhdi through its Python binding pyvhdi.
#   read-libvhdi.sh debian|2026 IMAGE RAW
# debian: Debian's python3-libvhdi (libvhdi 20210425) under /usr/bin/python3;
# 2026:   the libvhdi-python package (20260901) in $VHDREF_VENV
#         (default /opt/vhdref-venv).
# libvhdi leaves finding parents to its caller. This does what libvhdi's own
# vhdimount does: the parent is the file named by the child's parent name
# (after its last backslash) in the child's directory, recursively; each
# parent is attached with set_parent. Reads are 1 MiB at a time, as a copy
# tool would make them; LIBVHDI_CHUNK=BYTES changes that (with 512, reads
# never cross a block, and divergence D22 does not show).
set -eu
case $1 in
debian) python=/usr/bin/python3 ;;
2026) python=${VHDREF_VENV:-/opt/vhdref-venv}/bin/python ;;
*) echo "read-libvhdi.sh: the first argument is debian or 2026, not '$1'" >&2; exit 64 ;;
esac
exec "$python" - "$2" "$3" <<'PY'
import os, sys
import pyvhdi

CHUNK = int(os.environ.get("LIBVHDI_CHUNK", 1 << 20))
DIFFERENCING = 4
image, raw = sys.argv[1], sys.argv[2]


# Every file of the chain stays referenced until the end: libvhdi keeps
# only a pointer to a parent, and Python would free an unreferenced one.
chain = []


def open_chain(path, depth=0):
    if depth > 64:
        sys.exit("%s: more than 64 parents" % path)
    f = pyvhdi.file()
    f.open(path)
    chain.append(f)
    if f.disk_type == DIFFERENCING:
        name = f.parent_filename
        if not name:
            sys.exit("%s: a differencing image without a parent name" % path)
        parent_path = os.path.join(os.path.dirname(path), name.split("\\")[-1])
        f.set_parent(open_chain(parent_path, depth + 1))
    return f


disk = open_chain(image)
size = disk.get_media_size()
with open(raw, "wb") as out:
    offset = 0
    while offset < size:
        data = disk.read_buffer_at_offset(min(CHUNK, size - offset), offset)
        if not data:
            sys.exit("short read at %d of %d" % (offset, size))
        out.write(data)
        offset += len(data)
PY
