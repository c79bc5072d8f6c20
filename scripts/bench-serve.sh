#!/usr/bin/env bash
# `vhd serve` against `qemu-nbd -f vpc`, read-only, the same image, the same
# client commands: `qemu-img convert -O raw nbd://... out.raw` (the issue's
# measure) and `nbdcopy nbd://... null:` (the servers alone, no output file).
# The image is a 1 GiB dynamic VHD, half full (every other 2 MiB block holds
# random data). Runs alternate between the two servers, in a shuffled order
# each round, so that the load of a shared machine falls on both alike; the
# first round only warms the page cache; medians are shown.
#
#   RUNS=10 bash scripts/bench-serve.sh [DIR...]   (default: /dev/shm and target/)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vhd
VHD="$PWD/target/release/vhd"
RUNS="${RUNS:-10}"
dirs=("$@")
[ "${#dirs[@]}" -gt 0 ] || dirs=(/dev/shm "$PWD/target")

for base in "${dirs[@]}"; do
  dir="$(mktemp -d "$base/vhdref-bench-serve.XXXXXX")"
  pids=()
  cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
  }
  trap cleanup EXIT
  python3 - "$dir/in.raw" <<'PY'
import os, sys
block = 2 << 20
with open(sys.argv[1], "wb") as f:
    f.truncate(1 << 30)
    for i in range(0, 512, 2):
        f.seek(i * block)
        f.write(os.urandom(block))
PY
  "$VHD" convert "$dir/in.raw" "$dir/disk.vhd" --to dynamic >/dev/null
  rm -f "$dir/in.raw"
  sync

  "$VHD" serve "$dir/disk.vhd" --listen 127.0.0.1:10811 --name disk >/dev/null &
  pids+=($!)
  qemu-nbd -f vpc -r -t -x disk -b 127.0.0.1 -p 10812 "$dir/disk.vhd" &
  pids+=($!)
  sleep 1

  echo "== $base ($(df -T "$dir" | awk 'NR==2 {print $2}')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 - "$RUNS" "$dir" <<'PY'
import random, statistics, subprocess, sys, time
runs, d = int(sys.argv[1]), sys.argv[2]
servers = {
    "vhd serve": "nbd://127.0.0.1:10811/disk",
    "qemu-nbd -f vpc": "nbd://127.0.0.1:10812/disk",
}
clients = {
    "qemu-img convert -O raw URL out.raw": lambda url: ["qemu-img", "convert", "-O", "raw", url, d + "/out.raw"],
    "nbdcopy URL null:": lambda url: ["nbdcopy", url, "null:"],
}
for cname, make in clients.items():
    times = {s: [] for s in servers}
    for r in range(runs + 1):
        order = list(servers)
        random.shuffle(order)
        for s in order:
            subprocess.run(["rm", "-f", d + "/out.raw"], check=True)
            t = time.monotonic()
            subprocess.run(make(servers[s]), check=True)
            if r > 0:
                times[s].append(time.monotonic() - t)
    print(cname)
    for s, ts in times.items():
        print("  %-16s median %.3f s  min %.3f s  max %.3f s  (%d runs)"
              % (s, statistics.median(ts), min(ts), max(ts), len(ts)))
PY
  # Both serve the same bytes.
  qemu-img convert -O raw nbd://127.0.0.1:10811/disk "$dir/a.raw"
  qemu-img convert -O raw nbd://127.0.0.1:10812/disk "$dir/b.raw"
  cmp "$dir/a.raw" "$dir/b.raw" && echo "same bytes from both servers"
  cleanup
  trap - EXIT
done
