#!/usr/bin/env bash
# Runs qemu-img, libvhdi (pyvhdi of both Pythons), 7-Zip and dissect over
# every corpus case that must open and prints, per case, whether each read
# the manifest's contents (see peers.py for the verdicts), then a summary.
#
#   scripts/corpus/verify-peers.sh [CASE-NAME-SUBSTRING]
#
# Needs qemu-img, 7zz, /usr/bin/python3 with pyvhdi and the venv at
# /opt/vhdref-venv (or VHDREF_VENV_PYTHON) with libvhdi-python and
# dissect.hypervisor. Evidence only: not a test that gates anything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv_python="${VHDREF_VENV_PYTHON:-/opt/vhdref-venv/bin/python}"
for tool in qemu-img 7zz /usr/bin/python3 "$venv_python"; do
    command -v "$tool" >/dev/null || { echo "verify-peers: $tool is missing" >&2; exit 1; }
done
exec "$venv_python" "$here/peers.py" "$@"
