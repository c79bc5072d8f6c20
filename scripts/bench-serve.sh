#!/usr/bin/env bash
# `vhd serve` against `qemu-nbd -f vpc`, read-only, the same image, the same
# client command: qemu-img convert -O raw nbd://... out.raw, timed with
# hyperfine. The image is a 1 GiB dynamic VHD, half full (every other 2 MiB
# block holds random data). Run on tmpfs (/dev/shm) and on the work disk.
#
#   bash scripts/bench-serve.sh [DIR...]    (default: /dev/shm and target/)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vhd
VHD="$PWD/target/release/vhd"
RUNS="${RUNS:-7}"
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
  python3 - "$dir/in.raw" <<'EOF'
import os, sys
block = 2 << 20
with open(sys.argv[1], "wb") as f:
    f.truncate(1 << 30)
    for i in range(0, 512, 2):
        f.seek(i * block)
        f.write(os.urandom(block))
EOF
  "$VHD" convert "$dir/in.raw" "$dir/disk.vhd" --to dynamic >/dev/null
  rm -f "$dir/in.raw"
  sync

  "$VHD" serve "$dir/disk.vhd" --listen 127.0.0.1:10811 --name disk >/dev/null &
  pids+=($!)
  qemu-nbd -f vpc -r -t -x disk -b 127.0.0.1 -p 10812 "$dir/disk.vhd" &
  pids+=($!)
  sleep 1

  echo "== $base ($(df -T "$dir" | awk 'NR==2 {print $2}'))"
  hyperfine --warmup 1 --runs "$RUNS" --style basic \
    --prepare "rm -f $dir/out.raw" \
    -n "vhd serve" "qemu-img convert -O raw nbd://127.0.0.1:10811/disk $dir/out.raw" \
    -n "qemu-nbd -f vpc" "qemu-img convert -O raw nbd://127.0.0.1:10812/disk $dir/out.raw"
  # Both serve the same bytes.
  qemu-img convert -O raw nbd://127.0.0.1:10811/disk "$dir/a.raw"
  qemu-img convert -O raw nbd://127.0.0.1:10812/disk "$dir/b.raw"
  cmp "$dir/a.raw" "$dir/b.raw" && echo "same bytes from both servers"
  cleanup
  trap - EXIT
done
