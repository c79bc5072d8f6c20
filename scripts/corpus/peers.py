"""Runs the peer readers over every corpus case that must open and says,
per case and peer, whether the peer reads the manifest's contents.

    scripts/corpus/verify-peers.sh [CASE-NAME-SUBSTRING]

Peers: qemu-img (convert -f vpc -O raw), libvhdi (pyvhdi of /usr/bin/python3
and of the venv; children get their parents with set_parent), 7-Zip
(7zz e -so, parents beside the child) and dissect.hypervisor. Each output is
hashed and compared with the manifest's sha256. Verdicts:

  OK     the peer read exactly the expected contents
  CHS    qemu read a shorter disk (it sizes creators 'vpc ' and 'qemu' by
         their CHS geometry) and that prefix matches a full read that was OK
  DIFF   the peer read other bytes (or another size)
  ERR    the peer refused the image or failed
  n/a    the peer cannot read differencing images (qemu, dissect)

This is evidence that the expected contents are right where independent
readers agree; where they do not, corpora/README.md says which and why.
"""

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPORA = os.path.join(ROOT, "corpora")
SYS_PYTHON = "/usr/bin/python3"
TIMEOUT = 300

PYVHDI_READER = r"""
import sys, pyvhdi
chunk, out, chain = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
files = []
for path in chain:
    f = pyvhdi.file()
    f.open(path)
    files.append(f)
for child, parent in reversed(list(zip(files, files[1:]))):
    child.set_parent(parent)
f = files[0]
size = f.get_media_size()
with open(out, "wb") as o:
    off = 0
    while off < size:
        data = f.read_buffer_at_offset(min(chunk, size - off), off)
        if not data:
            sys.exit("short read at %d of %d" % (off, size))
        o.write(data)
        off += len(data)
"""

DISSECT_READER = r"""
import sys
from dissect.hypervisor.disk.vhd import VHD
with open(sys.argv[2], "rb") as fh, open(sys.argv[1], "wb") as o:
    v = VHD(fh)
    size = v.size
    off = 0
    while off < size:
        data = v.read(min(1 << 20, size - off))
        if not data:
            sys.exit("short read at %d of %d" % (off, size))
        o.write(data)
        off += len(data)
"""


def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def materialize(case, tmp):
    """Copies the case's files (its directory for a chain) into tmp,
    gunzipping .gz; returns the path of the image to open."""
    file = case["file"]
    if "/" in file:
        d = file.split("/", 1)[0]
        files = [os.path.relpath(os.path.join(a, f), CORPORA)
                 for a, _, fs in os.walk(os.path.join(CORPORA, d)) for f in fs]
    else:
        files = [file]
    for f in files:
        dst = os.path.join(tmp, f[:-3] if f.endswith(".gz") else f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if f.endswith(".gz"):
            with gzip.open(os.path.join(CORPORA, f)) as i, open(dst, "wb") as o:
                shutil.copyfileobj(i, o)
        else:
            shutil.copy(os.path.join(CORPORA, f), dst)
    return os.path.join(tmp, file[:-3] if file.endswith(".gz") else file)


def run(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, **kw)
    except subprocess.TimeoutExpired:
        return None


def verdict(out_path, proc, case):
    if proc is None:
        return "ERR(timeout)", None
    if proc.returncode != 0 or not os.path.exists(out_path):
        return "ERR(%d)" % proc.returncode, None
    got = sha_file(out_path)
    return ("OK" if got == case["sha256"] else "DIFF"), got


def qemu_sizes_by_chs(case):
    # Measured with qemu-img 10.0.2: CHS sizing only for these two creators
    # (and never with the maximum geometry).
    app = case["info"]["creator_application"]
    c, h, s = case["info"]["geometry"]
    if app not in ("vpc ", "qemu") or (c, h, s) == (65535, 16, 255):
        return None
    return c * h * s * 512


def chain_paths(case, tmp):
    layers = case.get("layers") or [{"file": case["file"]}]
    return [os.path.join(tmp, l["file"][:-3] if l["file"].endswith(".gz") else l["file"])
            for l in layers]


def check_case(case, venv_python):
    results = {}
    tmp = tempfile.mkdtemp(prefix="vhdref-peers-")
    try:
        img = materialize(case, tmp)
        chain = chain_paths(case, tmp)
        differencing = case["info"]["type"] == "differencing"
        bs = case["info"]["block_size"] or (512 * 1024)
        chunk = str(min(bs, 512 * 1024))
        good_full = None
        # libvhdi, both builds
        for name, py in (("libvhdi-sys", SYS_PYTHON), ("libvhdi-venv", venv_python)):
            out = os.path.join(tmp, name + ".raw")
            p = run([py, "-c", PYVHDI_READER, chunk, out] + chain)
            v, _ = verdict(out, p, case)
            results[name] = v
            if v == "OK":
                good_full = out
        # 7-Zip: parents found beside the child
        out = os.path.join(tmp, "7zz.raw")
        try:
            with open(out, "wb") as o:
                p = subprocess.run(["7zz", "e", "-so", img], stdout=o, stderr=subprocess.PIPE,
                                   cwd=os.path.dirname(img), timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            p = None
        v, _ = verdict(out, p, case)
        results["7zz"] = v
        if v == "OK" and good_full is None:
            good_full = out
        if differencing:
            results["qemu"] = "n/a"
            results["dissect"] = "n/a"
            return results
        # qemu
        out = os.path.join(tmp, "qemu.raw")
        p = run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", img, out])
        v, _ = verdict(out, p, case)
        chs = qemu_sizes_by_chs(case)
        if v == "DIFF" and chs is not None and good_full is not None \
                and os.path.getsize(out) == min(chs, case["current_size"]):
            with open(out, "rb") as a, open(good_full, "rb") as b:
                if a.read() == b.read(os.path.getsize(out)):
                    v = "CHS"
        results["qemu"] = v
        # dissect
        out = os.path.join(tmp, "dissect.raw")
        p = run([venv_python, "-c", DISSECT_READER, out, img])
        results["dissect"], _ = verdict(out, p, case)
        return results
    finally:
        shutil.rmtree(tmp)


def main():
    venv_python = os.environ.get("VHDREF_VENV_PYTHON", "/opt/vhdref-venv/bin/python")
    needle = sys.argv[1] if len(sys.argv) > 1 else ""
    manifest = json.load(open(os.path.join(CORPORA, "manifest.json")))
    peers = ["qemu", "libvhdi-sys", "libvhdi-venv", "7zz", "dissect"]
    totals = {p: {} for p in peers}
    for case in manifest["cases"]:
        if not case["open"] or needle not in case["name"]:
            continue
        r = check_case(case, venv_python)
        for p in peers:
            k = r[p].split("(")[0]
            totals[p][k] = totals[p].get(k, 0) + 1
        print("%-48s %s" % (case["name"], " ".join("%s=%s" % (p, r[p]) for p in peers)),
              flush=True)
    print()
    print("summary (cases that open):")
    for p in peers:
        print("  %-13s %s" % (p, ", ".join("%s %d" % kv for kv in sorted(totals[p].items()))))


if __name__ == "__main__":
    main()
