#!/usr/bin/env bash
# Builds vhd and shows the main job on an example image: create a dynamic
# image, write into it, inspect it, check it, make a differencing child,
# flatten the chain, and compare the result with what was written.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin vhd
vhd=$PWD/target/release/vhd
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
run() { printf '\n$ %s\n' "$*"; "$@"; }

run "$vhd" create disk.vhd 64M
printf 'hello from vhdref' > hello.txt
run "$vhd" write disk.vhd --offset 1M < hello.txt
run "$vhd" read disk.vhd --offset 1M --length 17
echo
run "$vhd" info disk.vhd
run "$vhd" map disk.vhd
run "$vhd" check disk.vhd
run "$vhd" create child.vhd --parent disk.vhd
printf 'child data' | "$vhd" write child.vhd --offset 2M
run "$vhd" info child.vhd
run "$vhd" map child.vhd
run "$vhd" convert child.vhd flat.raw --to raw
run "$vhd" compare child.vhd flat.raw
