#!/usr/bin/env python3
"""Regenerates corpora/: images written by other tools (qemu-img, pyvhd),
plus damaged copies named after the rule they break, and the manifest with
what each must read as and what verdict it must get.

Expected contents come from the raw input each image was made from, never
from vhdref. Run by hand (needs qemu-img and the venv's pyvhd); CI only
checks the committed files (tests/corpora.rs).

    /opt/vhdref-venv/bin/python scripts/make-corpus.py
"""

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "corpora")
MIB = 1024 * 1024


def raw_with_data(path, size, seed):
    """A raw disk of `size` bytes, zeros with a few random runs."""
    rng = random.Random(seed)
    data = bytearray(size)
    for _ in range(4):
        n = rng.randrange(512, 8192)
        at = rng.randrange(0, size - n)
        data[at:at + n] = bytes(rng.randrange(256) for _ in range(n))
    with open(path, "wb") as f:
        f.write(data)
    return bytes(data)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def footer_fields(image):
    with open(image, "rb") as f:
        f.seek(-512, 2)
        footer = f.read(512)
    current_size = struct.unpack(">Q", footer[48:56])[0]
    disk_type = struct.unpack(">I", footer[60:64])[0]
    return current_size, disk_type


def checksum(block, field):
    total = sum(b for i, b in enumerate(block) if not field <= i < field + 4)
    return (~total) & 0xFFFFFFFF


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def refooter(path, offset, mutate):
    """Rewrites the footer at `offset` after `mutate(bytearray)`, fixing its checksum."""
    with open(path, "rb") as f:
        f.seek(offset)
        footer = bytearray(f.read(512))
    mutate(footer)
    footer[64:68] = struct.pack(">I", checksum(footer, 64))
    patch(path, offset, bytes(footer))


def main():
    cases = []
    work = tempfile.mkdtemp()
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        if name.endswith(".vhd"):
            os.remove(os.path.join(OUT, name))

    def add(name, made_by, command, contents, verdict, rules=()):
        image = os.path.join(OUT, name)
        entry = {
            "file": name,
            "made_by": made_by,
            "command": command,
            "verdict": verdict,
            "rules": sorted(rules),
        }
        if contents is not None:
            size, _ = footer_fields(image) if verdict != "invalid" else (len(contents), 0)
            padded = contents + bytes(max(0, size - len(contents)))
            entry["current_size"] = size
            entry["sha256"] = sha256(padded[:size])
        cases.append(entry)

    # qemu-img, dynamic and fixed, exact size and CHS-rounded.
    for sub in ("dynamic", "fixed"):
        for force in ("on", "off"):
            raw = os.path.join(work, f"q-{sub}-{force}.raw")
            data = raw_with_data(raw, 3 * MIB, seed=len(cases) + 1)
            name = f"qemu-{sub}-force-{force}.vhd"
            cmd = ["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
                   f"subformat={sub},force_size={force}", raw, os.path.join(OUT, name)]
            subprocess.run(cmd, check=True)
            # Without force_size the size is rounded up to a CHS multiple;
            # the tail reads as zeros. QEMU's creator "qemu" then has a
            # geometry that matches the algorithm.
            add(name, "qemu-img " + subprocess.run(["qemu-img", "--version"], capture_output=True,
                                                  text=True).stdout.split()[2],
                " ".join(cmd[:-2] + ["IN.raw", "OUT.vhd"]), data,
                "warnings" if force == "on" else "valid",
                ["GEO-ALGORITHM"] if force == "on" else [])

    # pyvhd (Xen vhd-util layout): every block allocated, full bitmaps.
    raw = os.path.join(work, "pyvhd.raw")
    data = raw_with_data(raw, 3 * MIB, seed=99)
    import pyvhd  # noqa: E402 (only in the venv)
    with open(raw, "rb") as i, open(os.path.join(OUT, "pyvhd-dynamic.vhd"), "wb") as o:
        pyvhd.do_vhd_convert(i, o)
    add("pyvhd-dynamic.vhd", "pyvhd 0.0.1", "pyvhd.do_vhd_convert(IN.raw, OUT.vhd)", data, "valid")

    # Damaged copies of the qemu fixed and dynamic images.
    base_fixed = os.path.join(OUT, "qemu-fixed-force-off.vhd")
    base_dyn = os.path.join(OUT, "qemu-dynamic-force-off.vhd")
    for c in cases:
        if c["file"] == "qemu-fixed-force-off.vhd":
            fixed_case = c
        if c["file"] == "qemu-dynamic-force-off.vhd":
            dyn_case = c

    def derived(name, base, base_case, damage, verdict, rules):
        path = os.path.join(OUT, name)
        shutil.copyfile(base, path)
        damage(path)
        entry = {
            "file": name,
            "made_by": base_case["made_by"] + ", then damaged by scripts/make-corpus.py",
            "command": f"copy of {base_case['file']}; {damage.__doc__.strip()}",
            "verdict": verdict,
            "rules": sorted(rules),
        }
        if verdict != "invalid":
            entry["current_size"] = base_case["current_size"]
            entry["sha256"] = base_case["sha256"]
        cases.append(entry)

    def bad_checksum(path):
        """flip one byte of the trailing footer's reserved area"""
        patch(path, os.path.getsize(path) - 100, b"\x01")

    def bad_checksum_both(path):
        """flip one byte in the reserved area of both footers"""
        patch(path, os.path.getsize(path) - 100, b"\x01")
        patch(path, 412, b"\x01")

    def bad_cookie(path):
        """overwrite the trailing footer's cookie"""
        patch(path, os.path.getsize(path) - 512, b"NOTAVHD!")

    def footer_511(path):
        """drop the last byte of the file (a 511-byte footer)"""
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 1)

    def truncated(path):
        """cut 64 KiB of data out of the middle and keep the footer"""
        with open(path, "rb") as f:
            blob = f.read()
        with open(path, "wb") as f:
            f.write(blob[:MIB] + blob[MIB + 65536:])

    def bad_copy(path):
        """flip one byte in the reserved area of the footer copy at offset 0"""
        patch(path, 412, b"\x01")

    def zero_trailing(path):
        """zero the trailing footer (the copy at 0 stays)"""
        patch(path, os.path.getsize(path) - 512, bytes(512))

    def bad_header_checksum(path):
        """flip a reserved byte of the dynamic header"""
        patch(path, 512 + 1000, b"\x01")

    def block_size_3m(path):
        """set block size 3 MiB and fix the header checksum"""
        with open(path, "rb") as f:
            f.seek(512)
            hdr = bytearray(f.read(1024))
        hdr[32:36] = struct.pack(">I", 3 * MIB)
        hdr[36:40] = struct.pack(">I", checksum(hdr, 36))
        patch(path, 512, bytes(hdr))

    def bat_beyond_eof(path):
        """point BAT entry 0 far past the end of the file"""
        patch(path, 1536, struct.pack(">I", 0x00F00000))

    def disk_type_5(path):
        """set disk type 5 in both footers and fix the checksums"""
        size = os.path.getsize(path)
        for off in (0, size - 512):
            refooter(path, off, lambda f: f.__setitem__(slice(60, 64), struct.pack(">I", 5)))

    def saved_state(path):
        """set the saved-state flag in both footers and fix the checksums"""
        size = os.path.getsize(path)
        for off in (0, size - 512):
            refooter(path, off, lambda f: f.__setitem__(84, 1))

    derived("x-FTR-CHECKSUM-fixed.vhd", base_fixed, fixed_case, bad_checksum, "invalid", ["FTR-CHECKSUM"])
    derived("x-FTR-CHECKSUM-dynamic.vhd", base_dyn, dyn_case, bad_checksum_both, "invalid", ["FTR-CHECKSUM"])
    derived("x-FTR-COOKIE-fixed.vhd", base_fixed, fixed_case, bad_cookie, "invalid", ["FTR-COOKIE"])
    derived("x-FTR-FIXED-LENGTH.vhd", base_fixed, fixed_case, truncated, "invalid", ["FTR-FIXED-LENGTH"])
    derived("x-HDR-CHECKSUM.vhd", base_dyn, dyn_case, bad_header_checksum, "invalid", ["HDR-CHECKSUM"])
    derived("x-HDR-BLOCK-SIZE.vhd", base_dyn, dyn_case, block_size_3m, "invalid", ["HDR-BLOCK-SIZE"])
    derived("x-BAT-ENTRY-BEYOND-EOF.vhd", base_dyn, dyn_case, bat_beyond_eof, "invalid", ["BAT-ENTRY-BEYOND-EOF"])
    derived("x-FTR-DISK-TYPE.vhd", base_dyn, dyn_case, disk_type_5, "invalid", ["FTR-DISK-TYPE"])
    # Readable with warnings.
    derived("w-FTR-511.vhd", base_fixed, fixed_case, footer_511, "warnings", ["FTR-511"])
    derived("w-FTR-TRAILING.vhd", base_dyn, dyn_case, zero_trailing, "warnings", ["FTR-TRAILING"])
    derived("w-FTR-COPY-MISMATCH.vhd", base_dyn, dyn_case, bad_copy, "warnings", ["FTR-COPY-MISMATCH"])
    derived("w-FTR-SAVED-STATE.vhd", base_dyn, dyn_case, saved_state, "warnings", ["FTR-SAVED-STATE"])

    manifest = {
        "schema_version": 1,
        "about": "Images by other writers and damaged copies. verdict: valid (opens, no finding), "
                 "warnings (opens; exactly these warning rules), invalid (open fails with the first rule). "
                 "sha256 is of the guest contents (current_size bytes), from the raw input.",
        "cases": sorted(cases, key=lambda c: c["file"]),
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    shutil.rmtree(work)
    print(f"{len(cases)} cases written to {OUT}")


if __name__ == "__main__":
    sys.exit(main())
