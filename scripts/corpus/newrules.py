"""A self-check of the corpus for the rules `open` does not evaluate: an
independent reading of each stored image (not the generator's model)
that applies the twelve rules of issue 11 other than PAR-INVALID, and
compares what it finds with each case's `rules`.

    python3 scripts/corpus/newrules.py

The older 37 rules are cross-checked against `vhd check` (see README); this
covers the new ones so that no valid image breaks one by accident and every
w- case breaks exactly what it says. It skips what it cannot judge: images
whose footer, header or BAT are unusable (error cases), and PAR-INVALID.
"""

import gzip
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPORA = os.path.join(ROOT, "corpora")
NEW = {"FILE-LEAK", "FILE-TAIL", "FILE-ORDER", "BMP-CLEAR-DATA", "BMP-PAST-END",
       "FTR-RESERVED", "HDR-RESERVED", "PAR-LOCATOR-OVERLAP", "PAR-LOCATOR-SPACE",
       "PAR-LOCATOR-MISSING", "PAR-NAME-MISMATCH"}
PATH_CODES = {b"W2ru", b"W2ku", b"Wi2r", b"Wi2k", b"MacX"}
KNOWN_CODES = PATH_CODES | {b"Mac ", b"\0\0\0\0"}


def load(rel):
    path = os.path.join(CORPORA, rel)
    if rel.endswith(".gz"):
        with gzip.open(path) as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def ok_checksum(buf, at):
    return struct.unpack(">I", buf[at:at + 4])[0] == (~(sum(buf) - sum(buf[at:at + 4]))) & 0xFFFFFFFF


def overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


def check(data, found_parent_name=None):
    """The new-rule findings of one image (a set of rule IDs)."""
    found = set()
    n_len = len(data)
    foot = data[-512:]
    foot_off = n_len - 512
    if foot[:8] != b"conectix" or not ok_checksum(foot, 64):
        copy = data[:512]
        if copy[:8] == b"conectix" and ok_checksum(copy, 64) and \
                struct.unpack(">I", copy[60:64])[0] in (3, 4):
            foot, foot_off = copy, n_len      # FTR-TRAILING: the end is the file's end
        elif n_len >= 511 and data[-511:-503] == b"conectix":
            foot = data[-511:] + b"\0"
            foot_off = n_len - 511
        else:
            return None
    if any(foot[85:512]):
        found.add("FTR-RESERVED")
    disk_type = struct.unpack(">I", foot[60:64])[0]
    if disk_type == 2:
        return found
    current_size = struct.unpack(">Q", foot[48:56])[0]
    hdr_off = struct.unpack(">Q", foot[16:24])[0]
    hdr = data[hdr_off:hdr_off + 1024]
    if hdr[:8] != b"cxsparse" or not ok_checksum(hdr, 36):
        return None
    if struct.unpack(">I", hdr[60:64])[0] or any(hdr[768:1024]):
        found.add("HDR-RESERVED")
    table, mte, bs = struct.unpack(">QII", hdr[16:24] + hdr[28:36])
    if bs < 512 or bs & (bs - 1) or table % 512:
        return None
    n = -(-current_size // bs)
    bm = -(-max(1, bs // 4096) // 512) * 512 if bs >= 4096 else 512
    span = bm + bs
    bat = [struct.unpack(">I", data[table + 4 * i:table + 4 * i + 4])[0] for i in range(mte)]
    regions = [("copy", 0, 512), ("header", hdr_off, hdr_off + 1024),
               ("bat", table, table + -(-4 * mte // 512) * 512)]
    # locators
    locs = []
    for i in range(8):
        e = hdr[576 + 24 * i:600 + 24 * i]
        code, space, length, _, off = struct.unpack(">4sIIIQ", e)
        if code == b"\0\0\0\0":
            continue
        locs.append((i, code, space, length, off))
    if disk_type == 4:
        if not any(l[1] in PATH_CODES for l in locs):
            found.add("PAR-LOCATOR-MISSING")
        for i, code, space, length, off in locs:
            if space < length and space * 512 < length:
                found.add("PAR-LOCATOR-SPACE")
            mine = (off, off + length)
            if length == 0:
                continue
            others = [(o, o + ln) for j, _, _, ln, o in locs if j != i and ln]
            if any(overlaps(mine, r) for r in others) or \
                    any(overlaps(mine, (a, b)) for _, a, b in regions):
                found.add("PAR-LOCATOR-OVERLAP")
        if found_parent_name is not None:
            raw = hdr[64:576]
            units = [raw[k:k + 2] for k in range(0, 512, 2)]
            end = next((k for k, u in enumerate(units) if u == b"\0\0"), 256)
            try:
                name = raw[:2 * end].decode("utf-16-be")
                base = name.replace("\\", "/").rsplit("/", 1)[-1]
                if base and base != found_parent_name:
                    found.add("PAR-NAME-MISMATCH")
            except UnicodeDecodeError:
                pass
        for _, code, space, length, off in locs:
            if code in KNOWN_CODES and 1 <= length <= 65536 and off >= 512 and \
                    off + length <= foot_off:
                sp = space if space >= length else space * 512
                regions.append(("locator", off, off + max(sp, length)))
    blocks = sorted((bat[i] * 512, i) for i in range(min(n, mte)) if bat[i] != 0xFFFFFFFF)
    extra = sorted(bat[i] * 512 for i in range(n, mte) if bat[i] != 0xFFFFFFFF)
    # bitmaps
    spb = bs // 512
    for start, i in blocks:
        bitmap = data[start:start + bm]
        for s in range(spb):
            lba = i * spb + s
            bit = bitmap[s // 8] & (0x80 >> (s % 8))
            if bit and lba * 512 >= current_size and i == n - 1:
                found.add("BMP-PAST-END")
            if not bit and disk_type == 3 and lba * 512 < current_size:
                d = data[start + bm + s * 512:start + bm + (s + 1) * 512]
                if any(d):
                    found.add("BMP-CLEAR-DATA")
    # layout: blktap's batmap (a 'tdbatmap' sector right after the BAT and
    # the map it points at) is metadata too
    bat_end = table + -(-mte * 4 // 512) * 512
    if data[bat_end:bat_end + 8] == b"tdbatmap":
        map_off = int.from_bytes(data[bat_end + 8:bat_end + 16], "big")
        map_secs = int.from_bytes(data[bat_end + 16:bat_end + 20], "big")
        regions.append(("batmap", bat_end, bat_end + 512))
        regions.append(("batmap", map_off, map_off + map_secs * 512))
    used = [(a, b) for _, a, b in regions] + [(s, s + span) for s, _ in blocks] + \
        [(s, s + span) for s in extra]
    if blocks:
        first = blocks[0][0]
        meta = [(a, b) for k, a, b in regions if k != "copy"]
        if any(a > first for a, _ in meta):
            found.add("FILE-ORDER")
    used.sort()
    pos = 512
    gaps = []
    for a, b in used:
        if a > pos:
            gaps.append((pos, a))
        pos = max(pos, b)
    end_of_used = pos
    for a, b in gaps:
        if b - a >= span and a < foot_off:
            found.add("FILE-LEAK")
    tail = foot_off - end_of_used
    if tail >= span:
        found.add("FILE-LEAK")
    elif tail > 0 and any(data[end_of_used:foot_off]):
        # a short gap is padding when it holds only zeros
        found.add("FILE-TAIL")
    return found


def main():
    manifest = json.load(open(os.path.join(CORPORA, "manifest.json")))
    bad = 0
    checked = 0
    for c in manifest["cases"]:
        if "PAR-INVALID" in c["rules"] or not c["open"] and not (set(c["rules"]) & NEW):
            continue
        data = load(c["file"])
        parent_name = None
        if c.get("layers") and len(c["layers"]) > 1:
            parent_name = c["layers"][1]["file"].rsplit("/", 1)[-1].removesuffix(".gz")
        got = check(data, parent_name)
        if got is None:
            continue
        checked += 1
        want = set(c["rules"]) & NEW
        if got != want:
            bad += 1
            print("%s: new-rule findings %s, manifest says %s" % (c["name"], sorted(got),
                                                                  sorted(want)))
    print("%d cases checked for the new rules, %d disagree" % (checked, bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
