"""Cases made by real tools on this machine: qemu-img (create and convert,
dynamic and fixed, force_size on and off, sizes around the CHS switches
and unaligned sizes) and pyvhd (the venv's module).

Each tool runs in a scratch directory on a raw input this module writes
(tagged sectors from the seed); the expected contents are that raw input
(padded with zeros to current_size). The tools' time stamps and unique IDs
(pyvhd: the unique ID) are then set to values derived from the seed and
the footer checksums recomputed, so a rerun with the same tool versions
gives the same bytes. Nothing else in the files is touched.
"""

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile

from families import Ctx
from vhdfmt import KIB, MIB, SECTOR, checksum, escape4

VENV_PYTHON = "/opt/vhdref-venv/bin/python"
PYVHD_SCRIPT = """import sys, pyvhd
with open(sys.argv[1], "rb") as i, open(sys.argv[2], "wb") as o:
    pyvhd.do_vhd_convert(i, o)
"""


def need(tool):
    if shutil.which(tool) is None and not os.path.exists(tool):
        raise SystemExit("generate.py: %s is needed for the real-tool cases "
                         "(or pass --no-tools)" % tool)


def qemu_version():
    out = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[2]


def pyvhd_version():
    out = subprocess.run([VENV_PYTHON, "-c",
                          "import importlib.metadata as m; print(m.version('pyvhd'))"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def raw_input(ctx, size, spots):
    """A raw disk of `size` bytes: zeros, with tagged sectors at `spots`
    (guest sector numbers) and, if the size is not whole sectors, a few
    bytes at the very end."""
    data = bytearray(size)
    for lba in spots:
        if (lba + 1) * SECTOR <= size:
            data[lba * SECTOR:(lba + 1) * SECTOR] = ctx.sector("raw", lba)
    if size % SECTOR:
        tail = size % SECTOR
        data[size - tail:] = ctx.noise(tail)
    return bytes(data)


def parse(path):
    """Footer (and header) fields from a finished file, by this module's own reading."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        length = f.tell()
        f.seek(length - 512)
        foot = f.read(512)
        c, h, s = struct.unpack(">HBB", foot[56:60])
        info = {
            "type": {2: "fixed", 3: "dynamic", 4: "differencing"}[
                struct.unpack(">I", foot[60:64])[0]],
            "current_size": struct.unpack(">Q", foot[48:56])[0],
            "block_size": None,
            "creator_application": escape4(foot[28:32]),
            "creator_host_os": escape4(foot[36:40]),
            "geometry": [c, h, s],
        }
        if info["type"] != "fixed":
            f.seek(struct.unpack(">Q", foot[16:24])[0])
            hdr = f.read(1024)
            info["block_size"] = struct.unpack(">I", hdr[32:36])[0]
    return info


def patch_identity(path, ctx, time_stamp=True):
    """Sets the unique ID (and time stamp) of every footer to seed-derived
    values and recomputes their checksums."""
    uid = ctx.uuid()
    stamp = ctx.stamp()
    with open(path, "r+b") as f:
        f.seek(0, 2)
        length = f.tell()
        offsets = [length - 512]
        f.seek(0)
        if f.read(8) == b"conectix":
            offsets.append(0)
        for off in offsets:
            f.seek(off)
            foot = bytearray(f.read(512))
            foot[68:84] = uid
            if time_stamp:
                foot[24:28] = struct.pack(">I", stamp)
            foot[64:68] = struct.pack(">I", checksum(foot, 64))
            f.seek(off)
            f.write(foot)


def sha_of(raw, size):
    data = raw[:size] + bytes(max(0, size - len(raw)))
    return hashlib.sha256(data).hexdigest()


class Maker:
    def __init__(self, seed, out):
        self.seed = seed
        self.out = out
        self.entries = []
        self.work = tempfile.mkdtemp(prefix="vhdref-corpus-")

    def add(self, name, family, made_by, command, rules, path, raw, peer_notes=None,
            description=""):
        from generate import verdict_of, write_file
        with open(path, "rb") as f:
            content = f.read()
        stored = write_file(os.path.join(self.out, name + ".vhd"), content)
        info = parse(path)
        rules = sorted(rules)
        verdict = verdict_of(rules)
        e = {
            "name": name,
            "file": os.path.relpath(stored, self.out),
            "family": family,
            "made_by": made_by,
            "command": command,
            "description": description,
            "verdict": verdict,
            "rules": rules,
            "open": verdict != "errors",
            "current_size": info["current_size"],
            "sha256": sha_of(raw, info["current_size"]),
            "info": info,
        }
        if peer_notes:
            e["peer_notes"] = peer_notes
        self.entries.append(e)

    def done(self):
        shutil.rmtree(self.work)


QEMU_CHS_NOTE = ("creator 'qemu': qemu and vhdref agree here because current_size is the "
                 "CHS product qemu itself rounded to.")


def qemu_cases(m):
    need("qemu-img")
    version = qemu_version()
    made_by = "qemu-img %s" % version
    patch_note = "; then time stamp and unique ID set from the seed, checksums recomputed"

    def create(name, sub, force, size, rules, description):
        ctx = Ctx(m.seed, name)
        path = os.path.join(m.work, name + ".vhd")
        cmd = ["qemu-img", "create", "-q", "-f", "vpc", "-o",
               "subformat=%s,force_size=%s" % (sub, force), path, str(size)]
        subprocess.run(cmd, check=True)
        patch_identity(path, ctx)
        shown = " ".join(cmd[:-2] + ["OUT.vhd", str(size)])
        m.add(name, "qemu", made_by, shown + patch_note, rules, path, b"",
              description=description)

    def convert(name, sub, force, raw, rules, description, notes=None):
        ctx = Ctx(m.seed, name)
        raw_path = os.path.join(m.work, name + ".raw")
        with open(raw_path, "wb") as f:
            f.write(raw)
        path = os.path.join(m.work, name + ".vhd")
        cmd = ["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
               "subformat=%s,force_size=%s" % (sub, force), raw_path, path]
        subprocess.run(cmd, check=True)
        patch_identity(path, ctx)
        shown = " ".join(cmd[:-2] + ["IN.raw", "OUT.vhd"]) + \
            " (IN.raw: %d bytes of tagged sectors from the seed)" % len(raw)
        m.add(name, "qemu", made_by, shown + patch_note, rules, path, raw, notes,
              description=description)

    geo = ["GEO-ALGORITHM"]
    for sub in ("dynamic", "fixed"):
        create("qemu-create-%s-10m" % sub, sub, "off", "10M", [],
               "10 MiB asked for, rounded up to 10514432 (302/4/17).")
        create("w-GEO-ALGORITHM-qemu-create-%s-force" % sub, sub, "on", "10M", geo,
               "force_size: exactly 10 MiB, creator 'qem2', geometry 65535/16/255.")
        create("qemu-create-%s-below-switch" % sub, sub, "off", 35617280, [],
               "35617280 bytes, just below the 17->31 sectors-per-track switch: rounded "
               "to 35642880 with geometry 819/5/17, which describes the size exactly.")
        create("w-GEO-ALGORITHM-qemu-create-%s-unaligned" % sub, sub, "on", 300001, geo,
               "force_size with 300001 bytes: rounded up to whole sectors (300544).")
        create("qemu-create-%s-unaligned" % sub, sub, "off", 300001, [],
               "300001 bytes: rounded up to a CHS product.")
    create("qemu-create-dynamic-at-63-switch", "dynamic", "off", 260046848, [],
           "260046848 bytes (31*16*1024 sectors), where the algorithm switches to 63 "
           "sectors per track.")

    ctx = Ctx(m.seed, "qemu-convert")
    # data only inside the first 2 MiB block: the partial last block stays unallocated
    raw3 = raw_input(ctx, 3 * MIB, [0, 1, 3, 1000, 4095])
    for sub in ("dynamic", "fixed"):
        convert("qemu-convert-%s" % sub, sub, "off", raw3, [],
                "A 3 MiB raw disk with data in its first 2 MiB, CHS-rounded.")
        convert("w-GEO-ALGORITHM-qemu-convert-%s-force" % sub, sub, "on", raw3, geo,
                "The same 3 MiB raw disk with force_size.")
    # data in the last, partial block: qemu writes whole blocks with full bitmaps
    raw_tail = raw_input(ctx, 3 * MIB, [2, 4200, 6100])
    convert("w-BMP-PAST-END-qemu-convert", "dynamic", "on", raw_tail, ["BMP-PAST-END",
                                                                          "GEO-ALGORITHM"],
            "Data in the last, partial 2 MiB block: qemu sets every bit of that block's "
            "bitmap, also for the sectors past the end of the disk.")
    raw_odd = raw_input(ctx, 3 * MIB + 1000, [1, 5000])
    convert("w-GEO-ALGORITHM-qemu-convert-unaligned", "dynamic", "on", raw_odd,
            ["BMP-PAST-END", "GEO-ALGORITHM"],
            "A raw disk of 3 MiB + 1000 bytes: qemu rounds it up to whole sectors; the "
            "last block is written whole.")
    convert("qemu-convert-fixed-unaligned", "fixed", "off", raw_odd, [],
            "A raw disk of 3 MiB + 1000 bytes, fixed, CHS-rounded.")


def pyvhd_cases(m):
    need(VENV_PYTHON)
    version = pyvhd_version()
    script = os.path.join(m.work, "pyvhd_convert.py")
    with open(script, "w") as f:
        f.write(PYVHD_SCRIPT)

    def convert(name, size, spots, rules, description, notes=None):
        ctx = Ctx(m.seed, name)
        raw = raw_input(ctx, size, spots)
        raw_path = os.path.join(m.work, name + ".raw")
        with open(raw_path, "wb") as f:
            f.write(raw)
        path = os.path.join(m.work, name + ".vhd")
        subprocess.run([VENV_PYTHON, script, raw_path, path], check=True)
        patch_identity(path, ctx, time_stamp=False)
        m.add(name, "pyvhd", "pyvhd %s" % version,
              "pyvhd.do_vhd_convert(open(IN.raw), open(OUT.vhd, 'wb')) (IN.raw: %d bytes of "
              "tagged sectors from the seed); then the unique ID set from the seed, "
              "checksums recomputed" % size, rules, path, raw, notes, description=description)

    convert("pyvhd-convert-2m", 2 * MIB, [0, 7, 4095], [],
            "One 2 MiB block, all allocated (pyvhd allocates every block, full bitmaps, "
            "a Xen batmap after the BAT).")
    convert("pyvhd-convert-4m", 4 * MIB, [3, 5000, 8191], [],
            "Two 2 MiB blocks, 7 sectors of padding after the first (vhd-util's stride).")
    convert("w-BMP-PAST-END-pyvhd", 3 * MIB, [10, 6000], ["BMP-PAST-END"],
            "3 MiB: the last block's full bitmap covers sectors past the end.")
    convert("w-FTR-CURRENT-SIZE-pyvhd", 1000000, [0, 100], ["BMP-PAST-END", "FTR-CURRENT-SIZE"],
            "1000000 bytes: pyvhd stores the raw length as current_size.",
            "qemu floors the size to 999936 bytes (divergences D12).")


def build_all(seed, out):
    m = Maker(seed, out)
    try:
        qemu_cases(m)
        pyvhd_cases(m)
    finally:
        m.done()
    return m.entries
