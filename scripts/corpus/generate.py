#!/usr/bin/env python3
"""Regenerates corpora/: the conformance corpus and its manifest.

    python3 scripts/corpus/generate.py --seed 1

Generator cases come from this directory's own minimal VHD writer
(vhdfmt.py, build.py, families.py, cases.py, damage.py), are rebuilt byte
for byte from the seed, and carry their expected contents from the writer's
model. Real-tool cases (tools.py) are made by qemu-img and pyvhd from raw
inputs this script writes; their time stamps and unique IDs are patched to
values derived from the seed (checksums recomputed), so they are
reproducible too as long as the tools are the same versions.

Needs: Python 3 (stdlib only), qemu-img, and /opt/vhdref-venv/bin/python
with pyvhd. `--no-tools` leaves the real-tool cases out (for a quick look;
the committed corpus always has them).
"""

import argparse
import gzip
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import damage  # noqa: E402,F401  (registers its cases)
import chains  # noqa: E402,F401  (registers its cases)
from vhdfmt import MIB, SparseFile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
GZ_OVER = 1 * MIB

ABOUT = ("vhdref conformance corpus. Each case is an image (or a chain in its own "
         "directory) with the rule IDs a complete checker must report for it (exactly), "
         "whether vhdref must open it, and for images that open the SHA-256 of the guest "
         "contents, taken from the raw input or the generator's model, never from a reader. "
         "Files over 1 MiB are stored gzip-compressed (.gz). See corpora/README.md.")


def write_file(path, content):
    """Writes a SparseFile or bytes; gzip (mtime 0, no name) when over 1 MiB.
    Returns the path written."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(content, (bytes, bytearray)):
        f = SparseFile()
        f.write(0, content)
        f.length = len(content)
        content = f
    if content.length > GZ_OVER:
        path += ".gz"
        with open(path, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw,
                               mtime=0) as gz:
                for chunk in content.chunks():
                    gz.write(chunk)
    else:
        with open(path, "wb") as out:
            for chunk in content.chunks():
                out.write(chunk)
    return path


def verdict_of(rules):
    if any(r in cases.ERROR_RULES for r in rules):
        return "errors"
    return "warnings" if rules else "valid"


def entry_for(c, seed, out):
    stored = {}
    for rel, content in sorted(c.files.items()):
        written = write_file(os.path.join(out, rel), content)
        stored[rel] = os.path.relpath(written, out)
    verdict = verdict_of(c.rules)
    opens = verdict != "errors"
    if opens:
        assert c.layer is not None and c.info is not None, c.name
    if c.family == "generator":
        made_by = "scripts/corpus (generator)"
    else:
        made_by = "scripts/corpus (layout of %s)" % cases.LAYOUT_OF[c.family]
    e = {
        "name": c.name,
        "file": stored[c.top],
        "family": c.family,
        "made_by": made_by,
        "command": "python3 scripts/corpus/generate.py --seed %d (case %s)" % (seed, c.function),
        "description": c.description,
        "verdict": verdict,
        "rules": c.rules,
        "open": opens,
        "current_size": c.layer.size if c.layer is not None else c.claimed_size(),
        "sha256": c.layer.sha256() if opens else None,
        "info": None,
    }
    if opens:
        info = dict(c.info)
        if c.parent_source:
            info["parent_source"] = c.parent_source
        e["info"] = info
    if c.layers is not None:
        e["layers"] = [{"file": stored[rel], "sha256": (layer.sha256() if layer else None)}
                       for rel, layer in c.layers]
    if c.parent_rules:
        e["parent_rules"] = sorted(c.parent_rules)
    if c.peer_notes:
        e["peer_notes"] = c.peer_notes
    return e


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "corpora"))
    ap.add_argument("--no-tools", action="store_true",
                    help="leave out the cases made by qemu-img and pyvhd")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name == "README.md":
            continue
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)

    entries = []
    names = set()
    for c in cases.build_all(args.seed):
        assert c.name not in names, c.name
        names.add(c.name)
        entries.append(entry_for(c, args.seed, out))
    if not args.no_tools:
        import tools
        for e in tools.build_all(args.seed, out):
            assert e["name"] not in names, e["name"]
            names.add(e["name"])
            entries.append(e)

    entries.sort(key=lambda e: e["name"])
    manifest = {"schema_version": 2, "about": ABOUT, "cases": entries}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    counts = {}
    for e in entries:
        counts[e["verdict"]] = counts.get(e["verdict"], 0) + 1
    print("%d cases written to %s (%s)" % (len(entries), out, ", ".join(
        "%s %d" % kv for kv in sorted(counts.items()))))


if __name__ == "__main__":
    main()
