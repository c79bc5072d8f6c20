#!/usr/bin/env bash
# Side-by-side timings of vhd and qemu-img on the same machine in one run.
# Each case runs 3 times; the median wall time is printed. Results go in
# spec/performance.md (with the machine and the load at the time).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vhd
vhd=$PWD/target/release/vhd
dir=$(mktemp -d "${TMPDIR:-/tmp}/vhdbench.XXXXXX")
trap 'rm -rf "$dir"' EXIT

median() { sort -n | sed -n 2p; }
# time_of CMD...: wall seconds of one run, output discarded.
time_of() {
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
# row NAME SETUP VHD-CMD QEMU-CMD [QEMU-SYNCING-CMD]: SETUP runs before each
# timed command. vhd always makes its output durable (fdatasync on close);
# qemu-img convert by default does not (cache mode unsafe), so converts are
# also timed with `-t writeback`, which flushes like vhd does.
row() {
  local name=$1 setup=$2 ours=$3 theirs=$4 synced=${5:-} a b c=""
  a=$(for _ in 1 2 3; do eval "$setup"; time_of bash -c "$ours"; done | median)
  b=$(for _ in 1 2 3; do eval "$setup"; time_of bash -c "$theirs"; done | median)
  if [ -n "$synced" ]; then
    c=$(for _ in 1 2 3; do eval "$setup"; time_of bash -c "$synced"; done | median)
    c=$(printf '%.2f s (%.1fx)' "$c" "$(echo "$c / $a" | bc -l)")
  fi
  printf '| %s | %.2f s | %.2f s (%.1fx) | %s |\n' "$name" "$a" "$b" "$(echo "$b / $a" | bc -l)" "${c:--}"
}

cd "$dir"
# A 1 GiB raw disk, sparse, with 256 runs of 1 MiB random data (25%).
python3 - <<'PY'
import os, random
r = random.Random(7)
with open("in.raw", "wb") as f:
    f.truncate(1 << 30)
    for i in range(256):
        f.seek(r.randrange(0, 1024) << 20)
        f.write(os.urandom(1 << 20))
PY
cp --sparse=never in.raw dense.raw

echo "| case | vhd | qemu-img (x vhd's time) | qemu-img -t writeback (x vhd's time) |"
echo "|---|---|---|---|"
row "convert sparse raw -> dynamic" "rm -f o.vhd" \
  "$vhd convert in.raw o.vhd --to dynamic" \
  "qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on in.raw o.vhd" \
  "qemu-img convert -t writeback -f raw -O vpc -o subformat=dynamic,force_size=on in.raw o.vhd"
row "convert dense raw -> dynamic" "rm -f o.vhd" \
  "$vhd convert dense.raw o.vhd --to dynamic" \
  "qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on dense.raw o.vhd" \
  "qemu-img convert -t writeback -f raw -O vpc -o subformat=dynamic,force_size=on dense.raw o.vhd"
"$vhd" convert in.raw d.vhd --to dynamic >/dev/null
row "convert dynamic -> raw" "rm -f o.raw" \
  "$vhd convert d.vhd o.raw --to raw" \
  "qemu-img convert -f vpc -O raw d.vhd o.raw" \
  "qemu-img convert -t writeback -f vpc -O raw d.vhd o.raw"
row "convert dynamic -> fixed" "rm -f o.vhd" \
  "$vhd convert d.vhd o.vhd --to fixed" \
  "qemu-img convert -f vpc -O vpc -o subformat=fixed,force_size=on d.vhd o.vhd" \
  "qemu-img convert -t writeback -f vpc -O vpc -o subformat=fixed,force_size=on d.vhd o.vhd"
# Writes that allocate a new block each (4 KiB every 2 MiB over 4 GiB), then
# sequential 64 KiB writes into a fresh image, then reads of the result.
row "bench -w: 2048 x 4 KiB, step 2 MiB (each allocates)" \
  "rm -f w.vhd q.vhd; $vhd create w.vhd 4G >/dev/null; qemu-img create -q -f vpc -o force_size=on q.vhd 4G" \
  "$vhd bench w.vhd -w -c 2048 -s 4K -S 2M" \
  "qemu-img bench -f vpc -w -c 2048 -s 4K -S 2M q.vhd"
row "bench -w: 16384 x 64 KiB sequential (1 GiB)" \
  "rm -f w.vhd q.vhd; $vhd create w.vhd 4G >/dev/null; qemu-img create -q -f vpc -o force_size=on q.vhd 4G" \
  "$vhd bench w.vhd -w -c 16384 -s 64K" \
  "qemu-img bench -f vpc -w -c 16384 -s 64K q.vhd"
row "bench read: 16384 x 64 KiB sequential" ":" \
  "$vhd bench d.vhd -c 16384 -s 64K" \
  "qemu-img bench -f vpc -c 16384 -s 64K d.vhd"
